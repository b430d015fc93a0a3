namespace RecurFormer.Engine.Requests;

/// <summary>What the server hands the engine: a tokenized prompt and how to continue it.</summary>
public sealed record GenerationRequest(string Id, IReadOnlyList<int> PromptTokenIds, SamplingParams Sampling);
