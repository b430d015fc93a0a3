using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>
/// Reads the slow-tokenizer files of a byte-level BPE checkpoint: vocab.json (token → id) and merges.txt (one
/// "a b" pair per line after an optional "#version" line). These files carry no pre-tokenizer, so the regex follows
/// the tokenizer class named in tokenizer_config.json (Qwen2's own regex, else GPT-2's), and added tokens come from
/// tokenizer_config.json's added_tokens_decoder.
/// </summary>
internal static class VocabMergesReader
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";

    public static TokenizerParts Read(string folder, TokenizerConfig config)
    {
        string vocabPath = Path.Combine(folder, VocabFileName);
        string mergesPath = Path.Combine(folder, MergesFileName);
        var vocabulary = ReadVocabulary(vocabPath);
        var merges = ReadMerges(mergesPath);
        bool isQwen2 = config.TokenizerClass?.StartsWith("Qwen2Tokenizer", StringComparison.Ordinal) == true;
        var splitter = new TextSplitter([SplitRule.Isolated(isQwen2 ? TextSplitter.Qwen2Pattern : TextSplitter.Gpt2Pattern)]);
        // Qwen2's slow tokenizer NFC-normalises its input; GPT-2's does not normalise.
        var normalizer = isQwen2 ? new TextNormalizer([System.Text.NormalizationForm.FormC]) : null;
        var model = new ByteLevelBpeModel(vocabPath, vocabulary, merges, splitter, normalizer,
            addPrefixSpace: config.AddPrefixSpace ?? false, ignoreMerges: false);
        return new TokenizerParts(TokenizerKind.ByteLevelBpeVocabMerges, vocabPath, model, config.AddedTokens);
    }

    private static Dictionary<string, int> ReadVocabulary(string path)
    {
        using var doc = JsonFile.Load(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new TokenizerLoadException(path, "expected a JSON object of token → id");
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in doc.RootElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new TokenizerLoadException(path, $"the value of \"{entry.Name}\" is not a token id");
            result[entry.Name] = id;
        }
        return result;
    }

    private static List<string> ReadMerges(string path)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (IOException e)
        {
            throw new TokenizerLoadException(path, $"cannot be read: {e.Message}", e);
        }
        var merges = new List<string>(lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            if (line.Split(' ').Length != 2)
                throw new TokenizerLoadException(path, $"line {i + 1} is not a pair of tokens separated by one space: \"{line}\"");
            merges.Add(line);
        }
        return merges;
    }
}
