namespace RecurFormer.Tokenization.Tests;

/// <summary>Missing, malformed and unsupported tokenizer files give one message naming the file and the problem.</summary>
public class BadInputTests
{
    [Fact]
    public void MissingFolder()
    {
        string path = Path.Combine(Path.GetTempPath(), "recurformer-no-such-folder-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerFiles()
    {
        using var folder = new TempFolder().WithDemoFiles("config.json");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal($"{folder.Path}: no tokenizer files (expected tokenizer.json, vocab.json + merges.txt, or tokenizer.model)", e.Message);
    }

    [Fact]
    public void TokenizerJsonThatIsNotJson()
    {
        using var folder = new TempFolder();
        File.WriteAllText(folder.File("tokenizer.json"), "{ \"model\": { \"type\": \"BPE\", ");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("tokenizer.json"), e.FilePath);
        Assert.Contains("not valid JSON", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("""{ "model": { "type": "Unigram", "vocab": [] }, "pre_tokenizer": { "type": "ByteLevel" } }""", "model type 'Unigram' is not supported")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": {}, "merges": [] }, "pre_tokenizer": { "type": "Metaspace" } }""", "not byte-level")]
    [InlineData("""{ "model": { "type": "BPE", "merges": [] }, "pre_tokenizer": { "type": "ByteLevel" } }""", "model.vocab is missing")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": { "a": 0, "b": 1, "ab": 2 }, "merges": [["a"]] }, "pre_tokenizer": { "type": "ByteLevel" } }""", "model.merges[0] is not a pair")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": { "a": "x" }, "merges": [] }, "pre_tokenizer": { "type": "ByteLevel" } }""", "model.vocab[\"a\"] is not a token id")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": {}, "merges": [] }, "pre_tokenizer": { "type": "Sequence", "pretokenizers": [ { "type": "Whitespace" }, { "type": "ByteLevel" } ] } }""", "pre_tokenizer type 'Whitespace' is not supported")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": {}, "merges": [] }, "pre_tokenizer": { "type": "Split", "pattern": { "Regex": "(" }, "behavior": "Isolated" }, "decoder": { "type": "ByteLevel" } }""", "regex is not valid")]
    [InlineData("""{ "model": { "type": "BPE", "vocab": {}, "merges": [] }, "added_tokens": [ { "content": "<x>" } ], "pre_tokenizer": { "type": "ByteLevel" } }""", "added_tokens[0] has no valid \"id\"")]
    public void MalformedOrUnsupportedTokenizerJson(string json, string problem)
    {
        using var folder = new TempFolder();
        File.WriteAllText(folder.File("tokenizer.json"), json);
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("tokenizer.json"), e.FilePath);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void VocabJsonWithoutMergesTxt()
    {
        using var folder = new TempFolder().WithDemoFiles("vocab.json");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("merges.txt"), e.FilePath);
    }

    [Fact]
    public void MergesTxtWithABadLine()
    {
        using var folder = new TempFolder().WithDemoFiles("vocab.json");
        File.WriteAllText(folder.File("merges.txt"), "#version: 0.2\nt e\nthis line has three\n");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("merges.txt"), e.FilePath);
        Assert.Contains("line 3", e.Message);
    }

    [Fact]
    public void MalformedTokenizerConfig()
    {
        using var folder = new TempFolder().WithDemoFiles("tokenizer.json");
        File.WriteAllText(folder.File("tokenizer_config.json"), "[1, 2");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("tokenizer_config.json"), e.FilePath);
    }

    [Fact]
    public void EosTokenNotInTheVocabulary()
    {
        using var folder = new TempFolder().WithDemoFiles("tokenizer.json");
        File.WriteAllText(folder.File("tokenizer_config.json"), """{ "eos_token": "</nope>" }""");
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Contains("eos_token \"</nope>\" is not in the vocabulary", e.Message);
    }

    [Fact]
    public void CorruptSentencePieceModel()
    {
        using var folder = new TempFolder();
        File.WriteAllBytes(folder.File("tokenizer.model"), [0x0A, 0xFF, 0xFF, 0x01, 0x02]);
        var e = Assert.Throws<TokenizerLoadException>(() => CheckpointTokenizer.FromPretrained(folder.Path));
        Assert.Equal(folder.File("tokenizer.model"), e.FilePath);
        Assert.Contains("not a valid SentencePiece model", e.Message);
    }
}
