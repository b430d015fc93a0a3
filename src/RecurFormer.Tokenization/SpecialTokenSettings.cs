using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>
/// Reads BOS/EOS ids the way generation does: generation_config.json first, then config.json (both may give
/// eos_token_id as an int or a list), then the token names in tokenizer_config.json.
/// </summary>
internal static class SpecialTokenSettings
{
    public const string GenerationConfigFileName = "generation_config.json";
    public const string ModelConfigFileName = "config.json";

    public static List<int>? ReadIds(string folder, string key)
    {
        foreach (var fileName in new[] { GenerationConfigFileName, ModelConfigFileName })
        {
            string path = Path.Combine(folder, fileName);
            if (!File.Exists(path)) continue;
            using var doc = JsonFile.Load(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new TokenizerLoadException(path, "expected a JSON object at the top level");
            if (doc.RootElement.IdList(key) is { } ids) return ids;
        }
        return null;
    }
}
