using RecurFormer.Engine.Sampling;

namespace RecurFormer.Engine.Requests;

/// <summary>What the server hands the engine: a tokenized prompt and how to continue it.</summary>
public sealed record GenerationRequest(string Id, IReadOnlyList<int> PromptTokenIds, SamplingParams Sampling)
{
    /// <summary>
    /// Constrained decoding: a new constraint for each choice (called once per choice, on the engine thread), or
    /// null for free generation.
    /// </summary>
    public Func<ITokenConstraint>? Constraint { get; init; }
}
