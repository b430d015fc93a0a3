using System.Globalization;
using Microsoft.ML.Tokenizers;

namespace RecurFormer.Tokenization;

/// <summary>
/// A SentencePiece <c>tokenizer.model</c> (Llama-2, Mistral style), encoded by Microsoft.ML.Tokenizers'
/// <see cref="SentencePieceTokenizer"/>. BOS is not added here; <see cref="CheckpointTokenizer"/> decides that.
/// </summary>
internal sealed class SentencePieceModel : ITokenModel
{
    public const string FileName = "tokenizer.model";

    private readonly SentencePieceTokenizer _sentencePiece;

    public SentencePieceModel(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            throw new TokenizerLoadException(path, $"cannot be read: {e.Message}", e);
        }
        try
        {
            _sentencePiece = SentencePieceTokenizer.Create(new MemoryStream(bytes), addBeginningOfSentence: false, addEndOfSentence: false, specialTokens: null);
        }
        catch (Exception e)
        {
            // Google.Protobuf and the tokenizer throw several exception types (some of them IOException) for a
            // corrupt or unsupported model; all of them mean the same thing to the user.
            throw new TokenizerLoadException(path, $"not a valid SentencePiece model: {e.Message}", e);
        }
    }

    public IReadOnlyDictionary<string, int> Vocabulary => _sentencePiece.Vocabulary;

    /// <summary>SentencePiece's dummy prefix: encoding puts "▁" before the text, decoding removes the leading space.</summary>
    public bool StripsLeadingSpaceOnDecode => _sentencePiece.AddDummyPrefix;

    /// <summary>The model's control tokens (BOS, EOS, unknown), which the checkpoint treats as special.</summary>
    public IEnumerable<(string Token, int Id)> ControlTokens()
    {
        if (_sentencePiece.BeginningOfSentenceId >= 0) yield return (_sentencePiece.BeginningOfSentenceToken, _sentencePiece.BeginningOfSentenceId);
        if (_sentencePiece.EndOfSentenceId >= 0) yield return (_sentencePiece.EndOfSentenceToken, _sentencePiece.EndOfSentenceId);
        if (_sentencePiece.UnknownId >= 0) yield return (_sentencePiece.UnknownToken, _sentencePiece.UnknownId);
    }

    public string BeginningOfSentenceToken => _sentencePiece.BeginningOfSentenceToken;

    public string EndOfSentenceToken => _sentencePiece.EndOfSentenceToken;

    public void Encode(string text, List<int> output)
    {
        if (text.Length == 0) return;
        output.AddRange(_sentencePiece.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false,
            considerPreTokenization: true, considerNormalization: true));
    }

    public byte[] TokenBytes(int id, string token)
    {
        // Byte-fallback pieces "<0xE4>" stand for one raw byte; every other piece is text with "▁" for space.
        if (_sentencePiece.ByteFallback && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte value))
            return [value];
        return System.Text.Encoding.UTF8.GetBytes(token.Replace('\u2581', ' '));
    }
}
