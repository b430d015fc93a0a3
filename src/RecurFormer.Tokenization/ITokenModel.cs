namespace RecurFormer.Tokenization;

/// <summary>
/// The part of a tokenizer that turns plain text (no added tokens in it) into ids and ids back into bytes.
/// Added tokens, BOS and decoding to text are handled once, above it, in <see cref="CheckpointTokenizer"/>.
/// </summary>
internal interface ITokenModel
{
    /// <summary>Token string → id of the model vocabulary (added tokens not included unless the file lists them there).</summary>
    IReadOnlyDictionary<string, int> Vocabulary { get; }

    /// <summary>Encodes a stretch of text that contains no added token, appending the ids.</summary>
    void Encode(string text, List<int> output);

    /// <summary>The raw bytes that a vocabulary token stands for in decoded text.</summary>
    byte[] TokenBytes(int id, string token);

    /// <summary>True when decoding drops one leading space (SentencePiece's dummy prefix).</summary>
    bool StripsLeadingSpaceOnDecode { get; }
}
