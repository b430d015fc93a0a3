using System.Text.RegularExpressions;

namespace RecurFormer.Tokenization;

/// <summary>
/// The pre-tokenization of a byte-level BPE tokenizer: a chain of regex splits (HuggingFace <c>Split</c>,
/// <c>ByteLevel</c> with <c>use_regex</c>, <c>Digits</c>), each applied to every piece the previous one produced.
/// Pieces are then byte-encoded and merged independently, so a merge never crosses a piece boundary.
/// </summary>
internal sealed class TextSplitter
{
    /// <summary>The regex of GPT-2's byte-level pre-tokenizer (HuggingFace ByteLevel with use_regex).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The regex of Qwen2's pre-tokenizer, used when only vocab.json + merges.txt of a Qwen2 checkpoint exist.</summary>
    public const string Qwen2Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly IReadOnlyList<SplitRule> _rules;

    public TextSplitter(IReadOnlyList<SplitRule> rules) => _rules = rules;

    public IReadOnlyList<SplitRule> Rules => _rules;

    public List<string> Split(string text)
    {
        var pieces = new List<string> { text };
        foreach (var rule in _rules)
        {
            var next = new List<string>(pieces.Count * 2);
            foreach (var piece in pieces) rule.Apply(piece, next);
            pieces = next;
        }
        return pieces;
    }
}

/// <summary>
/// One regex split (HuggingFace Split with invert=false). The matches are delimiters: behaviour "Isolated" keeps
/// them as pieces of their own, "Removed" drops them. The text between matches always becomes pieces.
/// </summary>
internal sealed class SplitRule(Regex pattern, bool keepMatches)
{
    public Regex Pattern { get; } = pattern;

    public void Apply(string text, List<string> output)
    {
        int last = 0;
        for (var match = Pattern.Match(text); match.Success; match = match.NextMatch())
        {
            if (match.Length == 0) continue;
            if (match.Index > last) output.Add(text[last..match.Index]);
            if (keepMatches) output.Add(match.Value);
            last = match.Index + match.Length;
        }
        if (last < text.Length) output.Add(text[last..]);
    }

    public static SplitRule Isolated(string pattern) =>
        new(new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant), keepMatches: true);
}
