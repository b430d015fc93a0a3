namespace RecurFormer.Tokenization.Tests;

/// <summary>The demo checkpoint's byte-level BPE tokenizer against the ids HuggingFace produced.</summary>
public class DemoModelTokenizerTests
{
    private static CheckpointTokenizer Tokenizer => TestData.DemoTokenizer;

    [Theory]
    [InlineData("prompt_chat")]
    [InlineData("prompt_doc")]
    public void EncodingTheDecodedReferencePromptGivesExactlyTheHuggingFaceIds(string tensorName)
    {
        var expected = SafetensorsInt64Reader.Read(Path.Combine(TestData.DemoModelFolder, "reference.safetensors"), tensorName)
            .Select(id => checked((int)id)).ToArray();

        string text = Tokenizer.Decode(expected);

        Assert.Equal(expected, Tokenizer.Encode(text));
    }

    [Fact]
    public void ChatPromptDecodesToTheChatMlText()
    {
        var ids = SafetensorsInt64Reader.Read(Path.Combine(TestData.DemoModelFolder, "reference.safetensors"), "prompt_chat")
            .Select(id => (int)id).ToArray();

        Assert.Equal(
            "<|im_start|>system\nYou are a concise assistant that explains .NET APIs.<|im_end|>\n" +
            "<|im_start|>user\nExplain System.Threading.CancellationToken.Equals.<|im_end|>\n<|im_start|>assistant\n",
            Tokenizer.Decode(ids));
        Assert.Equal(
            "system\nYou are a concise assistant that explains .NET APIs.\nuser\nExplain System.Threading.CancellationToken.Equals.\nassistant\n",
            Tokenizer.Decode(ids, skipSpecialTokens: true));
    }

    [Fact]
    public void ReadsVocabularyAndSpecialTokensFromTheCheckpoint()
    {
        Assert.Equal(TokenizerKind.ByteLevelBpeTokenizerJson, Tokenizer.Kind);
        Assert.Equal(8192, Tokenizer.VocabSize);
        Assert.Equal([0, 1, 2], Tokenizer.SpecialTokenIds.Order());
        Assert.Equal([2], Tokenizer.EosTokenIds);
        Assert.Equal(0, Tokenizer.BosTokenId);
        Assert.False(Tokenizer.AddsBosToken);
        Assert.False(Tokenizer.StripsLeadingSpaceOnDecode);
        Assert.StartsWith("{% for message in messages %}", Tokenizer.ChatTemplate);
    }

    [Theory]
    [InlineData("<|endoftext|>", 0)]
    [InlineData("<|im_start|>", 1)]
    [InlineData("<|im_end|>", 2)]
    public void SpecialTokensAreSingleTokens(string token, int id)
    {
        Assert.Equal([id], Tokenizer.Encode(token));
        Assert.Equal(id, Tokenizer.GetTokenId(token));
        Assert.Equal(token, Tokenizer.GetTokenString(id));
        Assert.True(Tokenizer.IsSpecialToken(id));

        var ids = Tokenizer.Encode("abc" + token + "def");
        Assert.Single(ids, id);
        Assert.Equal("abc" + token + "def", Tokenizer.Decode(ids));
    }

    [Fact]
    public void TokenStringsAreTheByteLevelVocabularyEntries()
    {
        int id = Tokenizer.GetTokenId("Ġt");
        Assert.Equal("Ġt", Tokenizer.GetTokenString(id));
        Assert.Equal(" t"u8.ToArray(), Tokenizer.GetTokenBytes(id).ToArray());
        Assert.True(Tokenizer.TryGetTokenId("Ċ", out int newline));
        Assert.Equal("\n"u8.ToArray(), Tokenizer.GetTokenBytes(newline).ToArray());
        Assert.False(Tokenizer.TryGetTokenId("no such token here", out _));
        Assert.Throws<KeyNotFoundException>(() => Tokenizer.GetTokenId("no such token here"));
    }

    [Fact]
    public void NoPrefixSpaceIsAdded()
    {
        // add_prefix_space is false: "System" at the start is not " System".
        var ids = Tokenizer.Encode("System");
        Assert.DoesNotContain('Ġ', string.Concat(ids.Select(Tokenizer.GetTokenString)));
    }

    [Fact]
    public void EveryValidationTextRoundTrips()
    {
        foreach (var text in TestData.ValidationTexts)
            Assert.Equal(text, Tokenizer.Decode(Tokenizer.Encode(text)));
    }

    [Fact]
    public void ValidationTextsEndWithTheEndOfTextToken()
    {
        // The training texts end in "<|endoftext|>", which must be the single token 0, not BPE pieces of it.
        foreach (var text in TestData.ValidationTexts.Where(t => t.EndsWith("<|endoftext|>", StringComparison.Ordinal)))
            Assert.Equal(0, Tokenizer.Encode(text)[^1]);
    }

    [Theory]
    [InlineData("héllo wörld")]
    [InlineData("😀 emoji and 世界 CJK, \t tabs\n\n  spaces   ")]
    [InlineData("")]
    [InlineData("   ")]
    public void ArbitraryUnicodeRoundTrips(string text) =>
        Assert.Equal(text, Tokenizer.Decode(Tokenizer.Encode(text)));

    [Theory]
    [InlineData(8192)]
    [InlineData(-1)]
    [InlineData(int.MaxValue)]
    public void IdsOutsideTheVocabularyAreRejected(int id)
    {
        var e = Assert.Throws<TokenIdOutOfRangeException>(() => Tokenizer.Decode([5, id]));
        Assert.Equal(id, e.TokenId);
        Assert.Contains($"token id {id} is not in the vocabulary (ids 0..8191)", e.Message);
        Assert.Throws<TokenIdOutOfRangeException>(() => Tokenizer.GetTokenBytes(id).ToArray());
        Assert.Throws<TokenIdOutOfRangeException>(() => Tokenizer.GetTokenString(id));
        Assert.False(Tokenizer.IsValidTokenId(id));
    }
}
