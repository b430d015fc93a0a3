namespace RecurFormer.Tokenization;

/// <summary>A token id that is not in the tokenizer's vocabulary (negative, too large, or a gap in the id range).</summary>
public sealed class TokenIdOutOfRangeException(int tokenId, int vocabSize)
    : ArgumentOutOfRangeException("ids", tokenId, $"token id {tokenId} is not in the vocabulary (ids 0..{vocabSize - 1})")
{
    public int TokenId { get; } = tokenId;
}
