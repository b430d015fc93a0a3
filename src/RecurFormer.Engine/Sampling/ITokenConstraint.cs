namespace RecurFormer.Engine.Sampling;

/// <summary>
/// Constrained decoding for one choice (structured output, forced tool calls): which tokens may come next, advanced
/// token by token. The engine calls it on its own thread only, once per sampled token, in this order:
/// <see cref="FillAllowed"/>, then (after the draw) <see cref="Accept"/>. End-of-sequence tokens are the engine's
/// business: it allows them exactly when <see cref="CanEnd"/>, and finishes the choice (reason <c>stop</c>) without
/// waiting for one when <see cref="MustEnd"/>.
/// </summary>
public interface ITokenConstraint
{
    /// <summary>
    /// Writes the tokens that may come next as a bitmask: bit <c>t % 64</c> of word <c>t / 64</c> is set when token
    /// <c>t</c> is allowed (<paramref name="allowed"/> has <c>(vocab + 63) / 64</c> words, cleared by the caller).
    /// End-of-sequence ids need not be set. Returns false when every token is allowed (nothing to mask).
    /// </summary>
    bool FillAllowed(Span<ulong> allowed);

    /// <summary>Advances past the chosen token (one that <see cref="FillAllowed"/> allowed).</summary>
    void Accept(int token);

    /// <summary>The output so far is complete: an end-of-sequence token may come next.</summary>
    bool CanEnd { get; }

    /// <summary>Nothing can follow the output so far: the choice ends here.</summary>
    bool MustEnd { get; }
}
