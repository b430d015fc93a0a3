namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// Exact match and token F1 of a generated answer against the reference, SQuAD-style: both lower-cased, split on
/// whitespace, punctuation trimmed from each token's ends; exact match compares the token lists.
/// </summary>
public static class AnswerScore
{
    private static readonly char[] Punctuation = ".,;:!?()[]{}\"'`".ToCharArray();

    public static string[] Tokens(string text) => text.ToLowerInvariant()
        .Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
        .Select(t => t.Trim(Punctuation))
        .Where(t => t.Length > 0)
        .ToArray();

    public static bool ExactMatch(string prediction, string reference) => Tokens(prediction).SequenceEqual(Tokens(reference));

    public static double F1(string prediction, string reference)
    {
        var predicted = Tokens(prediction);
        var expected = Tokens(reference);
        if (predicted.Length == 0 || expected.Length == 0)
        {
            return predicted.Length == expected.Length ? 1 : 0;
        }
        var counts = expected.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        var common = 0;
        foreach (var token in predicted)
        {
            if (counts.TryGetValue(token, out var left) && left > 0)
            {
                counts[token] = left - 1;
                common++;
            }
        }
        if (common == 0)
        {
            return 0;
        }
        var precision = (double)common / predicted.Length;
        var recall = (double)common / expected.Length;
        return 2 * precision * recall / (precision + recall);
    }
}
