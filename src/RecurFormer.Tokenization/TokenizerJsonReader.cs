using System.Text;
using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>
/// Reads a HuggingFace tokenizer.json whose model is byte-level BPE: vocabulary, merges (as "a b" strings or as
/// ["a", "b"] lists), normalizer, pre-tokenizer regex chain, added tokens and a BOS-adding post-processor.
/// </summary>
internal static class TokenizerJsonReader
{
    public const string FileName = "tokenizer.json";

    /// <summary>
    /// True when tokenizer.json describes byte-level BPE. SentencePiece-converted files (Llama-2: BPE with
    /// byte_fallback and a "▁" normalizer) are not, and are read from tokenizer.model instead.
    /// </summary>
    public static bool IsByteLevelBpe(JsonElement root) =>
        root.Property("model")?.String("type") is null or "BPE"
        && (MentionsByteLevel(root.Property("pre_tokenizer")) || MentionsByteLevel(root.Property("decoder")));

    public static TokenizerParts Read(string path, JsonElement root, TokenizerConfig config)
    {
        var model = root.Property("model") ?? throw new TokenizerLoadException(path, "has no \"model\" section");
        string type = model.String("type") ?? "BPE";
        if (type != "BPE")
            throw new TokenizerLoadException(path, $"model type '{type}' is not supported (byte-level BPE only; SentencePiece needs tokenizer.model)");
        if (!IsByteLevelBpe(root))
            throw new TokenizerLoadException(path, "BPE model is not byte-level (no ByteLevel pre-tokenizer or decoder); SentencePiece-style BPE needs tokenizer.model");

        var vocabulary = ReadVocabulary(path, model);
        var merges = ReadMerges(path, model);
        var (rules, prefixSpace) = PreTokenizerReader.Read(path, root.Property("pre_tokenizer"));
        bool addPrefixSpace = config.AddPrefixSpace ?? prefixSpace;
        var normalizer = ReadNormalizer(path, root.Property("normalizer"));
        bool ignoreMerges = model.Boolean("ignore_merges") ?? false;
        // tokenizer.json's added_tokens are authoritative; tokenizer_config.json may list more (transformers adds them).
        var addedTokens = ReadAddedTokens(path, root);
        var knownIds = addedTokens.Select(t => t.Id).ToHashSet();
        addedTokens.AddRange(config.AddedTokens.Where(t => !knownIds.Contains(t.Id)));
        var postProcessorBos = ReadPostProcessorBos(root.Property("post_processor"));
        var bpe = new ByteLevelBpeModel(path, vocabulary, merges, new TextSplitter(rules), normalizer, addPrefixSpace, ignoreMerges);
        return new TokenizerParts(TokenizerKind.ByteLevelBpeTokenizerJson, path, bpe, addedTokens, postProcessorBos);
    }

    private static Dictionary<string, int> ReadVocabulary(string path, JsonElement model)
    {
        if (model.Property("vocab") is not { ValueKind: JsonValueKind.Object } vocab)
            throw new TokenizerLoadException(path, "model.vocab is missing or not an object of token → id");
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocab.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new TokenizerLoadException(path, $"model.vocab[\"{entry.Name}\"] is not a token id");
            result[entry.Name] = id;
        }
        return result;
    }

    private static List<string> ReadMerges(string path, JsonElement model)
    {
        if (model.Property("merges") is not { ValueKind: JsonValueKind.Array } merges)
            throw new TokenizerLoadException(path, "model.merges is missing or not a list");
        var result = new List<string>(merges.GetArrayLength());
        int index = 0;
        foreach (var merge in merges.EnumerateArray())
        {
            string? pair = merge.ValueKind switch
            {
                JsonValueKind.String => merge.GetString(),
                JsonValueKind.Array when merge.GetArrayLength() == 2
                    && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String
                    && !merge[0].GetString()!.Contains(' ') && !merge[1].GetString()!.Contains(' ')
                    => merge[0].GetString() + " " + merge[1].GetString(),
                _ => null,
            };
            if (pair is null || pair.Split(' ').Length != 2)
                throw new TokenizerLoadException(path, $"model.merges[{index}] is not a pair of tokens (\"a b\" or [\"a\", \"b\"] without spaces inside)");
            result.Add(pair);
            index++;
        }
        return result;
    }

    private static List<AddedToken> ReadAddedTokens(string path, JsonElement root)
    {
        var tokens = new List<AddedToken>();
        if (root.Property("added_tokens") is not { ValueKind: JsonValueKind.Array } list) return tokens;
        int index = 0;
        foreach (var token in list.EnumerateArray())
        {
            if (token.Property("id") is not { ValueKind: JsonValueKind.Number } idElement || !idElement.TryGetInt32(out int id) || id < 0)
                throw new TokenizerLoadException(path, $"added_tokens[{index}] has no valid \"id\"");
            string content = token.String("content") ?? throw new TokenizerLoadException(path, $"added_tokens[{index}] has no \"content\"");
            tokens.Add(TokenizerConfig.ReadAddedToken(token, id, content));
            index++;
        }
        return tokens;
    }

    private static TextNormalizer? ReadNormalizer(string path, JsonElement? normalizer)
    {
        if (normalizer is null) return null;
        var forms = new List<NormalizationForm>();
        AddForms(path, normalizer.Value, forms);
        return forms.Count == 0 ? null : new TextNormalizer(forms);
    }

    private static void AddForms(string path, JsonElement normalizer, List<NormalizationForm> forms)
    {
        switch (normalizer.String("type"))
        {
            case "NFC": forms.Add(NormalizationForm.FormC); break;
            case "NFD": forms.Add(NormalizationForm.FormD); break;
            case "NFKC": forms.Add(NormalizationForm.FormKC); break;
            case "NFKD": forms.Add(NormalizationForm.FormKD); break;
            case "Sequence":
                foreach (var inner in normalizer.Property("normalizers")?.EnumerateArray() ?? default)
                    AddForms(path, inner, forms);
                break;
            case var other:
                throw new TokenizerLoadException(path, $"normalizer type '{other}' is not supported (NFC, NFD, NFKC, NFKD, Sequence)");
        }
    }

    /// <summary>The special token that a TemplateProcessing post-processor puts first in a single sequence.</summary>
    private static string? ReadPostProcessorBos(JsonElement? processor)
    {
        if (processor is null) return null;
        switch (processor.Value.String("type"))
        {
            case "TemplateProcessing":
                var first = processor.Value.Property("single") is { ValueKind: JsonValueKind.Array } single && single.GetArrayLength() > 0
                    ? single[0] : default;
                return first.Property("SpecialToken")?.String("id");
            case "Sequence":
                foreach (var inner in processor.Value.Property("processors")?.EnumerateArray() ?? default)
                    if (ReadPostProcessorBos(inner) is { } bos) return bos;
                return null;
            default:
                return null;
        }
    }

    private static bool MentionsByteLevel(JsonElement? element)
    {
        if (element is not { } e) return false;
        if (e.String("type") == "ByteLevel") return true;
        foreach (var listName in new[] { "pretokenizers", "decoders" })
            if (e.Property(listName) is { ValueKind: JsonValueKind.Array } list && list.EnumerateArray().Any(i => MentionsByteLevel(i)))
                return true;
        return false;
    }
}
