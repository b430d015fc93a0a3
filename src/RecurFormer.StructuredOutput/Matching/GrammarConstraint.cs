using RecurFormer.Engine.Sampling;

namespace RecurFormer.StructuredOutput.Matching;

/// <summary>
/// One choice's constraint: where it stands in the grammar and how many tokens it has left. Masks come from the
/// shared <see cref="GrammarMatcher"/>; near the end of the token budget only tokens after which the output can
/// still be completed are allowed, so a constrained answer cut by <c>max_tokens</c> is still complete whenever the
/// budget allows one at all. Used on the engine thread only.
/// </summary>
public sealed class GrammarConstraint(GrammarMatcher matcher, int maxTokens) : ITokenConstraint
{
    private int _state = matcher.Initial;
    private int _remaining = maxTokens;

    /// <summary>The parse state (tests).</summary>
    public int State => _state;

    public bool FillAllowed(Span<ulong> allowed)
    {
        var mask = matcher.Allowed(_state, Math.Max(0, _remaining - 1));
        var words = Math.Min(mask.Length, allowed.Length);
        mask.AsSpan(0, words).CopyTo(allowed);
        return true;
    }

    public void Accept(int token)
    {
        var next = matcher.Advance(_state, token);
        if (next < 0)
        {
            if (matcher.IsAccepting(_state))
            {
                return; // an end-of-sequence token after a complete output
            }
            throw new InvalidOperationException($"token {token} is not allowed by the grammar here");
        }
        _state = next;
        _remaining--;
    }

    public bool CanEnd => matcher.IsAccepting(_state);

    public bool MustEnd => matcher.IsAccepting(_state) && !matcher.CanContinue(_state);
}
