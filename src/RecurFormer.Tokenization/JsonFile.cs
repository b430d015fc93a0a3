using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>Reads a checkpoint's JSON file and turns every parse problem into a <see cref="TokenizerLoadException"/> naming it.</summary>
internal static class JsonFile
{
    public static JsonDocument Load(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new TokenizerLoadException(path, $"not valid JSON (line {e.LineNumber + 1}): {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new TokenizerLoadException(path, $"cannot be read: {e.Message}", e);
        }
    }

    public static JsonElement? Property(this JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null
            ? value
            : null;

    public static bool? Boolean(this JsonElement element, string name) => element.Property(name) switch
    {
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => null,
    };

    public static string? String(this JsonElement element, string name) =>
        element.Property(name) is { ValueKind: JsonValueKind.String } value ? value.GetString() : null;

    /// <summary>A token given either as a plain string or as an object with "content" (tokenizer_config.json uses both).</summary>
    public static string? TokenContent(this JsonElement element, string name) => element.Property(name) switch
    {
        { ValueKind: JsonValueKind.String } value => value.GetString(),
        { ValueKind: JsonValueKind.Object } value => value.String("content"),
        _ => null,
    };

    /// <summary>An id given as an int or a list of ints (generation_config.json's eos_token_id is either).</summary>
    public static List<int>? IdList(this JsonElement element, string name)
    {
        switch (element.Property(name))
        {
            case { ValueKind: JsonValueKind.Number } value when value.TryGetInt32(out int id):
                return [id];
            case { ValueKind: JsonValueKind.Array } array:
                var ids = new List<int>();
                foreach (var item in array.EnumerateArray())
                    if (item.ValueKind == JsonValueKind.Number && item.TryGetInt32(out int one)) ids.Add(one);
                return ids;
            default:
                return null;
        }
    }
}
