using System.Text.RegularExpressions;

namespace RecurFormer.Tokenization;

/// <summary>One piece of input text: either plain text for the model, or one added token.</summary>
internal readonly record struct TextSegment(string? Text, int TokenId)
{
    public static TextSegment Plain(string text) => new(text, -1);
    public static TextSegment Token(int id) => new(null, id);
    public bool IsToken => Text is null;
}

/// <summary>
/// Finds added tokens in raw text, leftmost first and longest first at the same position, as HuggingFace's
/// added vocabulary does, so that e.g. "&lt;|im_start|&gt;" in a chat prompt is one token and never reaches BPE.
/// </summary>
internal sealed class AddedTokenSplitter
{
    private readonly Regex? _pattern;
    private readonly Dictionary<string, AddedToken> _byContent;

    public AddedTokenSplitter(IEnumerable<AddedToken> tokens)
    {
        _byContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (var token in tokens)
            if (token.Content.Length > 0) _byContent[token.Content] = token;
        if (_byContent.Count == 0) return;
        // .NET alternation takes the first alternative that matches, so longer contents go first.
        var alternatives = _byContent.Keys.OrderByDescending(c => c.Length).ThenBy(c => c, StringComparer.Ordinal)
            .Select(Regex.Escape);
        _pattern = new Regex(string.Join("|", alternatives), RegexOptions.CultureInvariant);
    }

    public List<TextSegment> Split(string text)
    {
        var segments = new List<TextSegment>();
        if (_pattern is null)
        {
            if (text.Length > 0) segments.Add(TextSegment.Plain(text));
            return segments;
        }
        int plainStart = 0;
        int searchFrom = 0;
        while (searchFrom <= text.Length)
        {
            var match = _pattern.Match(text, searchFrom);
            if (!match.Success) break;
            var token = _byContent[match.Value];
            int start = match.Index, end = match.Index + match.Length;
            if (token.SingleWord && !IsWholeWord(text, start, end))
            {
                searchFrom = start + 1;
                continue;
            }
            if (token.LStrip)
                while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (token.RStrip)
                while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > plainStart) segments.Add(TextSegment.Plain(text[plainStart..start]));
            segments.Add(TextSegment.Token(token.Id));
            plainStart = searchFrom = end;
        }
        if (plainStart < text.Length) segments.Add(TextSegment.Plain(text[plainStart..]));
        return segments;
    }

    private static bool IsWholeWord(string text, int start, int end) =>
        (start == 0 || !char.IsLetterOrDigit(text[start - 1])) && (end == text.Length || !char.IsLetterOrDigit(text[end]));
}
