using System.Text;

namespace RecurFormer.Tokenization;

/// <summary>
/// Turns generated token ids into text as they arrive. A byte-level token can end in the middle of a UTF-8
/// character (an emoji or CJK character split across tokens), so incomplete bytes are held back until the
/// character is complete; the deltas returned by <see cref="Add"/> followed by <see cref="Flush"/> concatenate to
/// exactly <see cref="CheckpointTokenizer.Decode"/> of all ids. One instance per sequence; not thread-safe.
/// </summary>
public sealed class IncrementalDetokenizer
{
    private readonly CheckpointTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    // Encoding.UTF8's decoder keeps an incomplete trailing sequence between calls and replaces invalid bytes
    // with U+FFFD exactly as the one-shot Encoding.UTF8.GetString used by Decode does.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];
    private bool _emittedAny;
    private readonly List<int> _ids = [];

    public IncrementalDetokenizer(CheckpointTokenizer tokenizer, bool skipSpecialTokens = false)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>The ids fed so far.</summary>
    public IReadOnlyList<int> Ids => _ids;

    /// <summary>Feeds one token id; returns the text that is now complete (possibly empty).</summary>
    /// <exception cref="TokenIdOutOfRangeException">The id is not in the vocabulary.</exception>
    public string Add(int tokenId)
    {
        var bytes = _tokenizer.GetTokenBytes(tokenId);
        _ids.Add(tokenId);
        if (_skipSpecialTokens && _tokenizer.IsSpecialToken(tokenId)) return string.Empty;
        return DecodeBytes(bytes, flush: false);
    }

    /// <summary>
    /// Ends the sequence: bytes still held back (an incomplete character at the very end) come out as U+FFFD,
    /// as Decode would show them. Returns an empty string when nothing was pending.
    /// </summary>
    public string Flush() => DecodeBytes([], flush: true);

    /// <summary>Starts a new sequence with the same tokenizer.</summary>
    public void Reset()
    {
        _utf8.Reset();
        _emittedAny = false;
        _ids.Clear();
    }

    private string DecodeBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush);
        if (needed > _chars.Length) _chars = new char[Math.Max(needed, _chars.Length * 2)];
        int count = _utf8.GetChars(bytes, _chars, flush);
        if (count == 0) return string.Empty;
        var text = new ReadOnlySpan<char>(_chars, 0, count);
        if (!_emittedAny)
        {
            // Decode drops one leading space of the whole text (SentencePiece dummy prefix); do it once here too.
            _emittedAny = true;
            if (_tokenizer.StripsLeadingSpaceOnDecode && text[0] == ' ') text = text[1..];
        }
        return text.ToString();
    }
}
