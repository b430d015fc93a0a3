using System.Numerics;
using System.Text;
using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.TestSupport;

/// <summary>
/// Random walks through a grammar's token masks: what a model that may sample any allowed token would write. Shared
/// (linked) by the structured-output and server tests, which check that such outputs parse and validate.
/// </summary>
public static class ConstrainedWalks
{
    /// <summary>
    /// Draws allowed tokens uniformly until the constraint can end and a coin (<paramref name="stopWhenPossible"/>)
    /// says stop, or it must end, or <paramref name="maxTokens"/> are spent; returns the bytes written as text and
    /// whether the walk ended in a complete output.
    /// </summary>
    public static (string Text, bool Complete, int Tokens) Walk(GrammarMatcher matcher, int seed, int maxTokens = 200, double stopWhenPossible = 0.3)
    {
        var random = new Random(seed);
        var constraint = new GrammarConstraint(matcher, maxTokens);
        var words = new ulong[(matcher.Vocabulary.Size + 63) / 64];
        var bytes = new List<byte>();
        var allowed = new List<int>();
        for (var step = 0; step < maxTokens; step++)
        {
            if (constraint.MustEnd || (constraint.CanEnd && random.NextDouble() < stopWhenPossible))
            {
                return (Encoding.UTF8.GetString(bytes.ToArray()), true, step);
            }
            Array.Clear(words);
            constraint.FillAllowed(words);
            allowed.Clear();
            for (var w = 0; w < words.Length; w++)
            {
                for (var word = words[w]; word != 0; word &= word - 1)
                {
                    allowed.Add(w * 64 + BitOperations.TrailingZeroCount(word));
                }
            }
            if (allowed.Count == 0)
            {
                return (Encoding.UTF8.GetString(bytes.ToArray()), constraint.CanEnd, step);
            }
            var token = allowed[random.Next(allowed.Count)];
            constraint.Accept(token);
            bytes.AddRange(matcher.Vocabulary.Bytes(token) ?? []);
        }
        return (Encoding.UTF8.GetString(bytes.ToArray()), constraint.CanEnd, maxTokens);
    }
}
