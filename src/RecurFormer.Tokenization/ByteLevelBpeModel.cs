using Microsoft.ML.Tokenizers;

namespace RecurFormer.Tokenization;

/// <summary>
/// Byte-level BPE (GPT-2, Qwen2, Llama-3 style). Pre-tokenization is done here with the checkpoint's own regex
/// chain; each piece is then byte-encoded and merged by Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>.
/// </summary>
internal sealed class ByteLevelBpeModel : ITokenModel
{
    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocabulary;
    private readonly TextSplitter _splitter;
    private readonly TextNormalizer? _normalizer;
    private readonly bool _addPrefixSpace;
    private readonly bool _ignoreMerges;

    public ByteLevelBpeModel(
        string sourcePath,
        Dictionary<string, int> vocabulary,
        IReadOnlyList<string> merges,
        TextSplitter splitter,
        TextNormalizer? normalizer,
        bool addPrefixSpace,
        bool ignoreMerges)
    {
        _vocabulary = vocabulary;
        _splitter = splitter;
        _normalizer = normalizer;
        _addPrefixSpace = addPrefixSpace;
        _ignoreMerges = ignoreMerges;
        try
        {
            // No pre-tokenizer and no special tokens here: both are applied before a piece reaches the BPE model.
            _bpe = BpeTokenizer.Create(new BpeOptions(vocabulary) { Merges = merges, ByteLevel = true });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new TokenizerLoadException(sourcePath, $"the BPE vocabulary or merges are invalid: {e.Message}", e);
        }
    }

    public IReadOnlyDictionary<string, int> Vocabulary => _vocabulary;

    public bool StripsLeadingSpaceOnDecode => false;

    public void Encode(string text, List<int> output)
    {
        if (text.Length == 0) return;
        if (_normalizer is not null) text = _normalizer.Apply(text);
        // HuggingFace's ByteLevel pre-tokenizer adds the prefix space to every stretch between added tokens.
        if (_addPrefixSpace && text[0] != ' ') text = " " + text;
        foreach (var piece in _splitter.Split(text))
        {
            // ignore_merges (Llama-3): a piece that is itself in the vocabulary is one token, whatever the merges say.
            if (_ignoreMerges && _vocabulary.TryGetValue(ToByteLevel(piece), out int whole))
            {
                output.Add(whole);
                continue;
            }
            output.AddRange(_bpe.EncodeToIds(piece, considerPreTokenization: false, considerNormalization: false));
        }
    }

    public byte[] TokenBytes(int id, string token) => ByteLevelAlphabet.TokenToBytes(token);

    private static string ToByteLevel(string piece)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(piece);
        return string.Create(bytes.Length, bytes, (chars, b) =>
        {
            for (int i = 0; i < b.Length; i++) chars[i] = ByteLevelAlphabet.ToChar(b[i]);
        });
    }
}
