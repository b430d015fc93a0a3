using System.Collections.Frozen;
using System.Text;

namespace RecurFormer.Tokenization;

/// <summary>
/// The tokenizer of a HuggingFace checkpoint folder, read from its own files (see docs/tokenizers.md):
/// byte-level BPE from tokenizer.json or vocab.json + merges.txt, or SentencePiece from tokenizer.model.
/// Encoding recognises added/special tokens written in the text (as transformers does for chat prompts);
/// decoding joins the tokens' bytes and decodes them as UTF-8, so it agrees byte for byte with
/// <see cref="IncrementalDetokenizer"/>. Immutable and safe to share between threads.
/// </summary>
public sealed class CheckpointTokenizer
{
    private readonly ITokenModel _model;
    private readonly AddedTokenSplitter _addedTokenSplitter;
    private readonly string?[] _tokenStrings;
    private readonly byte[]?[] _tokenBytes;
    private readonly Dictionary<string, int> _tokenIds;
    private readonly int? _bosToAdd;

    internal CheckpointTokenizer(TokenizerParts parts, CheckpointSpecialTokens special, string? chatTemplate)
    {
        _model = parts.Model;
        Kind = parts.Kind;
        SourceFile = parts.SourceFile;
        AddedTokens = parts.AddedTokens;
        _addedTokenSplitter = new AddedTokenSplitter(parts.AddedTokens);

        _tokenIds = new Dictionary<string, int>(parts.Model.Vocabulary, StringComparer.Ordinal);
        foreach (var token in parts.AddedTokens) _tokenIds[token.Content] = token.Id;
        VocabSize = _tokenIds.Count == 0 ? 0 : _tokenIds.Values.Max() + 1;

        _tokenStrings = new string?[VocabSize];
        _tokenBytes = new byte[]?[VocabSize];
        foreach (var (token, id) in parts.Model.Vocabulary)
        {
            _tokenStrings[id] = token;
            _tokenBytes[id] = parts.Model.TokenBytes(id, token);
        }
        foreach (var token in parts.AddedTokens)
        {
            // Added tokens decode to their content as written, not through the byte-level alphabet.
            _tokenStrings[token.Id] = token.Content;
            _tokenBytes[token.Id] = Encoding.UTF8.GetBytes(token.Content);
        }

        SpecialTokenIds = parts.AddedTokens.Where(t => t.Special).Select(t => t.Id).ToFrozenSet();
        BosTokenId = special.BosTokenId;
        EosTokenIds = special.EosTokenIds;
        _bosToAdd = special.BosToAdd;
        ChatTemplate = chatTemplate;
    }

    /// <summary>Loads the tokenizer of the checkpoint in <paramref name="checkpointFolder"/>.</summary>
    /// <exception cref="TokenizerLoadException">No tokenizer files, or a malformed or unsupported one.</exception>
    public static CheckpointTokenizer FromPretrained(string checkpointFolder) => CheckpointTokenizerLoader.Load(checkpointFolder);

    /// <summary>Which kind of tokenizer this is, and so which file it came from.</summary>
    public TokenizerKind Kind { get; }

    /// <summary>The file the vocabulary was read from.</summary>
    public string SourceFile { get; }

    /// <summary>One more than the largest token id (vocabulary plus added tokens). The model's embedding may be larger.</summary>
    public int VocabSize { get; }

    /// <summary>The checkpoint's BOS token id (generation_config.json, config.json or tokenizer_config.json), if it has one.</summary>
    public int? BosTokenId { get; }

    /// <summary>Every id that ends generation: generation_config.json's eos_token_id (int or list), else config.json's, else tokenizer_config.json's eos_token.</summary>
    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Ids of the added tokens marked special; <see cref="Decode"/> drops them when asked to skip special tokens.</summary>
    public IReadOnlySet<int> SpecialTokenIds { get; }

    /// <summary>Tokens matched as a whole in the text before the model's own tokenization.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>True when <see cref="Encode(string)"/> puts a BOS token first (add_bos_token, or Llama-3's post-processor).</summary>
    public bool AddsBosToken => _bosToAdd is not null;

    /// <summary>The Jinja chat template from tokenizer_config.json, if any.</summary>
    public string? ChatTemplate { get; }

    /// <summary>True when decoding drops one leading space (SentencePiece's dummy prefix); the detokenizer does the same.</summary>
    public bool StripsLeadingSpaceOnDecode => _model.StripsLeadingSpaceOnDecode;

    /// <summary>Encodes text as the checkpoint's tokenizer does by default (BOS only if the tokenizer adds one).</summary>
    public int[] Encode(string text) => Encode(text, addBosToken: AddsBosToken);

    /// <summary>
    /// Encodes text. Text produced by a chat template already holds its BOS token, so encode it with
    /// <paramref name="addBosToken"/> false, as transformers' apply_chat_template does.
    /// </summary>
    public int[] Encode(string text, bool addBosToken)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBosToken)
            ids.Add(_bosToAdd ?? BosTokenId ?? throw new InvalidOperationException("this checkpoint's tokenizer has no BOS token"));
        foreach (var segment in _addedTokenSplitter.Split(text))
        {
            if (segment.IsToken) ids.Add(segment.TokenId);
            else _model.Encode(segment.Text!, ids);
        }
        return ids.ToArray();
    }

    /// <summary>Decodes ids to text: the tokens' bytes joined and read as UTF-8 (invalid bytes become U+FFFD).</summary>
    /// <exception cref="TokenIdOutOfRangeException">An id is not in the vocabulary.</exception>
    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>(ids.Count * 4);
        foreach (int id in ids)
        {
            var tokenBytes = GetTokenBytes(id);
            if (skipSpecialTokens && SpecialTokenIds.Contains(id)) continue;
            foreach (byte b in tokenBytes) bytes.Add(b);
        }
        string text = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
        return StripsLeadingSpaceOnDecode && text.StartsWith(' ') ? text[1..] : text;
    }

    /// <summary>The raw bytes of one token in decoded text; may be part of a UTF-8 character.</summary>
    /// <exception cref="TokenIdOutOfRangeException">The id is not in the vocabulary.</exception>
    public ReadOnlySpan<byte> GetTokenBytes(int id) =>
        (uint)id < (uint)VocabSize && _tokenBytes[id] is { } bytes ? bytes : throw new TokenIdOutOfRangeException(id, VocabSize);

    /// <summary>The token as written in the vocabulary (byte-level form, e.g. "Ġthe"; "▁the" for SentencePiece).</summary>
    /// <exception cref="TokenIdOutOfRangeException">The id is not in the vocabulary.</exception>
    public string GetTokenString(int id) =>
        (uint)id < (uint)VocabSize && _tokenStrings[id] is { } token ? token : throw new TokenIdOutOfRangeException(id, VocabSize);

    /// <summary>Looks up a token string as written in the vocabulary, or an added token's content.</summary>
    public bool TryGetTokenId(string token, out int id) => _tokenIds.TryGetValue(token, out id);

    /// <summary>Looks up a token string; throws <see cref="KeyNotFoundException"/> naming it when absent.</summary>
    public int GetTokenId(string token) =>
        _tokenIds.TryGetValue(token, out int id) ? id : throw new KeyNotFoundException($"token \"{token}\" is not in the vocabulary");

    /// <summary>True when the id names a token of this tokenizer.</summary>
    public bool IsValidTokenId(int id) => (uint)id < (uint)VocabSize && _tokenBytes[id] is not null;

    public bool IsSpecialToken(int id) => SpecialTokenIds.Contains(id);

    /// <summary>A fresh detokenizer for one generated sequence.</summary>
    public IncrementalDetokenizer CreateDetokenizer(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);
}
