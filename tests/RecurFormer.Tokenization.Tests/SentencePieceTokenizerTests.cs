namespace RecurFormer.Tokenization.Tests;

/// <summary>
/// SentencePiece checkpoints, on a tiny hand-written tokenizer.model (Data/make_sentencepiece_tiny.py; there is no
/// sentencepiece package to make a real one): BPE pieces, byte fallback for characters outside the vocabulary,
/// control tokens, the dummy prefix, and add_bos_token from tokenizer_config.json.
/// </summary>
public class SentencePieceTokenizerTests
{
    private static readonly CheckpointTokenizer Tokenizer = CheckpointTokenizer.FromPretrained(TestData.SentencePieceFolder);

    [Fact]
    public void LoadsTheModelAndItsSpecialTokens()
    {
        Assert.Equal(TokenizerKind.SentencePiece, Tokenizer.Kind);
        Assert.Equal(259 + 22, Tokenizer.VocabSize);
        Assert.Equal([0, 1, 2], Tokenizer.SpecialTokenIds.Order());
        Assert.Equal(1, Tokenizer.BosTokenId);
        Assert.Equal([2], Tokenizer.EosTokenIds);
        Assert.True(Tokenizer.AddsBosToken);
        Assert.True(Tokenizer.StripsLeadingSpaceOnDecode);
    }

    [Fact]
    public void EncodesWithBosAndMergedPieces()
    {
        int hello = Tokenizer.GetTokenId("▁hello"), world = Tokenizer.GetTokenId("▁world");

        Assert.Equal([1, hello, world], Tokenizer.Encode("hello world"));
        Assert.Equal([hello, world], Tokenizer.Encode("hello world", addBosToken: false));
        Assert.Equal("hello world", Tokenizer.Decode([1, hello, world], skipSpecialTokens: true));
        Assert.Equal("<s> hello world", Tokenizer.Decode([1, hello, world]));
    }

    [Fact]
    public void CharactersOutsideTheVocabularyFallBackToBytes()
    {
        var ids = Tokenizer.Encode("héllo", addBosToken: false);

        // "é" is not a piece: it is written as its two UTF-8 bytes <0xC3> <0xA9>.
        Assert.Contains(Tokenizer.GetTokenId("<0xC3>"), ids);
        Assert.Contains(Tokenizer.GetTokenId("<0xA9>"), ids);
        Assert.Equal([0xC3], Tokenizer.GetTokenBytes(Tokenizer.GetTokenId("<0xC3>")).ToArray());
        Assert.Equal("héllo", Tokenizer.Decode(ids));
    }

    [Fact]
    public void IncrementalDetokenizationHoldsBackByteFallbackPieces()
    {
        var ids = Tokenizer.Encode("hello 世界 é😀", addBosToken: true);
        var detokenizer = Tokenizer.CreateDetokenizer(skipSpecialTokens: true);
        var deltas = ids.Select(detokenizer.Add).ToList();
        deltas.Add(detokenizer.Flush());

        Assert.All(deltas, delta => Assert.DoesNotContain('\uFFFD', delta));
        Assert.Equal("hello 世界 é😀", string.Concat(deltas));
        Assert.Equal(Tokenizer.Decode(ids, skipSpecialTokens: true), string.Concat(deltas));
    }

    [Fact]
    public void SpecialTokensInTheTextAreSingleTokens()
    {
        int hello = Tokenizer.GetTokenId("▁hello");
        var ids = Tokenizer.Encode("hello</s>", addBosToken: false);

        Assert.Equal([hello, 2], ids);
    }
}
