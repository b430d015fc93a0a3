using System.Text.Json.Nodes;

namespace RecurFormer.Tokenization.Tests;

/// <summary>The same byte-level BPE tokenizer written in the other file layouts a checkpoint may use.</summary>
public class FileVariantTests
{
    [Fact]
    public void VocabJsonPlusMergesTxtGivesTheSameIdsAsTokenizerJson()
    {
        using var folder = new TempFolder().WithDemoFiles("vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json");
        var fromVocabMerges = CheckpointTokenizer.FromPretrained(folder.Path);

        Assert.Equal(TokenizerKind.ByteLevelBpeVocabMerges, fromVocabMerges.Kind);
        Assert.Equal(TestData.DemoTokenizer.VocabSize, fromVocabMerges.VocabSize);
        Assert.Equal([0, 1, 2], fromVocabMerges.SpecialTokenIds.Order());
        foreach (var text in TestData.ValidationTexts)
        {
            var ids = fromVocabMerges.Encode(text);
            Assert.Equal(TestData.DemoTokenizer.Encode(text), ids);
            Assert.Equal(text, fromVocabMerges.Decode(ids));
        }
    }

    [Fact]
    public void MergesWrittenAsStringsGiveTheSameIdsAsMergesWrittenAsLists()
    {
        using var folder = new TempFolder();
        var json = LoadDemoTokenizerJson();
        var merges = json["model"]!["merges"]!.AsArray();
        var asStrings = new JsonArray(merges.Select(m => (JsonNode)JsonValue.Create(m![0]!.GetValue<string>() + " " + m[1]!.GetValue<string>())!).ToArray());
        json["model"]!["merges"] = asStrings;
        File.WriteAllText(folder.File("tokenizer.json"), json.ToJsonString());

        AssertSameIdsAsDemo(CheckpointTokenizer.FromPretrained(folder.Path));
    }

    [Fact]
    public void SplitPreTokenizerInsideASequenceIsRead()
    {
        // Qwen2 / Llama-3 layout: Split(regex, Isolated) followed by ByteLevel without its own regex.
        using var folder = new TempFolder();
        var json = LoadDemoTokenizerJson();
        json["pre_tokenizer"] = JsonNode.Parse($$"""
            { "type": "Sequence", "pretokenizers": [
                { "type": "Split", "pattern": { "Regex": {{JsonValue.Create(TextSplitter.Gpt2Pattern)!.ToJsonString()}} }, "behavior": "Isolated", "invert": false },
                { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false } ] }
            """);
        File.WriteAllText(folder.File("tokenizer.json"), json.ToJsonString());

        AssertSameIdsAsDemo(CheckpointTokenizer.FromPretrained(folder.Path));
    }

    [Fact]
    public void TheRegexFromTheFileIsTheOneUsed()
    {
        // A regex that splits every character apart: no merges can happen, so every byte is its own token.
        using var folder = new TempFolder();
        var json = LoadDemoTokenizerJson();
        json["pre_tokenizer"] = JsonNode.Parse("""
            { "type": "Sequence", "pretokenizers": [
                { "type": "Split", "pattern": { "Regex": "." }, "behavior": "Isolated", "invert": false },
                { "type": "ByteLevel", "add_prefix_space": false, "use_regex": false } ] }
            """);
        File.WriteAllText(folder.File("tokenizer.json"), json.ToJsonString());
        var tokenizer = CheckpointTokenizer.FromPretrained(folder.Path);

        Assert.Equal(13, tokenizer.Encode("System.Thread").Length);
        Assert.True(TestData.DemoTokenizer.Encode("System.Thread").Length < 5);
    }

    [Fact]
    public void AddPrefixSpaceFromTokenizerConfigIsRespected()
    {
        using var folder = new TempFolder().WithDemoFiles("tokenizer.json");
        File.WriteAllText(folder.File("tokenizer_config.json"), """{ "add_prefix_space": true }""");
        var tokenizer = CheckpointTokenizer.FromPretrained(folder.Path);

        Assert.Equal(TestData.DemoTokenizer.Encode(" System and"), tokenizer.Encode("System and"));
        // Every stretch between added tokens gets the prefix space, as HuggingFace's ByteLevel pre-tokenizer does.
        Assert.Equal(TestData.DemoTokenizer.Encode(" a<|im_end|> b"), tokenizer.Encode("a<|im_end|>b"));
    }

    [Fact]
    public void EosIdsMayBeAListInGenerationConfig()
    {
        using var folder = new TempFolder().WithDemoFiles("tokenizer.json", "tokenizer_config.json");
        File.WriteAllText(folder.File("generation_config.json"), """{ "bos_token_id": 0, "eos_token_id": [2, 0] }""");

        Assert.Equal([2, 0], CheckpointTokenizer.FromPretrained(folder.Path).EosTokenIds);
    }

    [Fact]
    public void EosFallsBackToConfigJsonThenToTokenizerConfig()
    {
        using var withConfig = new TempFolder().WithDemoFiles("tokenizer.json", "tokenizer_config.json");
        File.WriteAllText(withConfig.File("config.json"), """{ "eos_token_id": 1 }""");
        Assert.Equal([1], CheckpointTokenizer.FromPretrained(withConfig.Path).EosTokenIds);

        using var onlyTokenizerConfig = new TempFolder().WithDemoFiles("tokenizer.json", "tokenizer_config.json");
        var tokenizer = CheckpointTokenizer.FromPretrained(onlyTokenizerConfig.Path);
        Assert.Equal([2], tokenizer.EosTokenIds);
        Assert.Null(tokenizer.BosTokenId); // "bos_token": null and no config files
    }

    [Fact]
    public void AddBosTokenInTokenizerConfigPutsBosFirst()
    {
        using var folder = new TempFolder().WithDemoFiles("tokenizer.json");
        File.WriteAllText(folder.File("tokenizer_config.json"), """{ "add_bos_token": true, "bos_token": "<|endoftext|>" }""");
        var tokenizer = CheckpointTokenizer.FromPretrained(folder.Path);

        Assert.True(tokenizer.AddsBosToken);
        Assert.Equal(0, tokenizer.Encode("Hi")[0]);
        Assert.Equal(TestData.DemoTokenizer.Encode("Hi"), tokenizer.Encode("Hi", addBosToken: false));
    }

    [Fact]
    public void TemplatePostProcessorBosIsAdded()
    {
        // Llama-3 adds <|begin_of_text|> through a TemplateProcessing post-processor, not add_bos_token.
        using var folder = new TempFolder();
        var json = LoadDemoTokenizerJson();
        json["post_processor"] = JsonNode.Parse("""
            { "type": "Sequence", "processors": [
                { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
                { "type": "TemplateProcessing",
                  "single": [ { "SpecialToken": { "id": "<|im_start|>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } } ],
                  "pair": [], "special_tokens": { "<|im_start|>": { "id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"] } } } ] }
            """);
        File.WriteAllText(folder.File("tokenizer.json"), json.ToJsonString());
        var tokenizer = CheckpointTokenizer.FromPretrained(folder.Path);

        Assert.True(tokenizer.AddsBosToken);
        Assert.Equal([1, .. TestData.DemoTokenizer.Encode("Hi")], tokenizer.Encode("Hi"));
    }

    [Fact]
    public void AddedTokenOptionsLStripAndRStripSwallowWhitespace()
    {
        var splitter = new AddedTokenSplitter([new AddedToken(7, "<mask>", Special: true, LStrip: true, RStrip: true), new AddedToken(8, "<m>", Special: false)]);

        var segments = splitter.Split("a  <mask>  b<m>c");

        Assert.Equal([TextSegment.Plain("a"), TextSegment.Token(7), TextSegment.Plain("b"), TextSegment.Token(8), TextSegment.Plain("c")], segments);
    }

    [Fact]
    public void LongestAddedTokenWinsAtTheSamePosition()
    {
        var splitter = new AddedTokenSplitter([new AddedToken(1, "<|a", Special: true), new AddedToken(2, "<|a|>", Special: true)]);

        Assert.Equal([TextSegment.Token(2), TextSegment.Plain("x")], splitter.Split("<|a|>x"));
    }

    private static JsonNode LoadDemoTokenizerJson() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(TestData.DemoModelFolder, "tokenizer.json")))!;

    private static void AssertSameIdsAsDemo(CheckpointTokenizer tokenizer)
    {
        foreach (var text in TestData.ValidationTexts.Take(200))
            Assert.Equal(TestData.DemoTokenizer.Encode(text), tokenizer.Encode(text));
    }
}
