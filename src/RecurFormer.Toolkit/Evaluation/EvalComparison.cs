using System.Globalization;
using System.Text.Json.Nodes;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>Two evaluation reports side by side, with the ratio model / baseline for every figure.</summary>
public static class EvalComparison
{
    /// <summary>The figures compared, as JSON paths into the report.</summary>
    public static readonly string[] Keys =
    [
        "perplexity.all", "perplexity.doc", "perplexity.qa", "perplexity.qa_answer", "perplexity.packed512",
        "perplexity.packed512_by_position.0-64", "perplexity.packed512_by_position.64-256", "perplexity.packed512_by_position.256-512",
        "qa.exact_match", "qa.token_f1",
        "cache.kv_bytes_per_token", "cache.state_bytes_per_sequence", "cache.window_bytes_per_sequence", "cache.bytes_per_sequence_at_512", "cache.bytes_per_sequence_at_2048",
    ];

    public static double? Get(JsonObject report, string path)
    {
        JsonNode? node = report;
        foreach (var part in path.Split('.'))
        {
            node = node is JsonObject o ? o[part] : null;
        }
        return node is JsonValue v && double.TryParse(v.ToJsonString(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var d) ? d : null;
    }

    public static JsonObject Compare(JsonObject model, JsonObject baseline) => new(Keys.Select(key =>
    {
        var a = Get(model, key);
        var b = Get(baseline, key);
        return KeyValuePair.Create(key, (JsonNode?)new JsonObject
        {
            ["model"] = a,
            ["baseline"] = b,
            ["ratio"] = a is { } x && b is { } y && y != 0 ? x / y : null,
        });
    }));

    public static void Print(TextWriter writer, JsonObject model, JsonObject baseline, string modelName, string baselineName)
    {
        writer.WriteLine($"{"figure",-42} {Short(modelName),14} {Short(baselineName),14} {"ratio",8}");
        foreach (var key in Keys)
        {
            var a = Get(model, key);
            var b = Get(baseline, key);
            var ratio = a is { } x && b is { } y && y != 0 ? (x / y).ToString("F4", CultureInfo.InvariantCulture) : "-";
            writer.WriteLine($"{key,-42} {Format(a),14} {Format(b),14} {ratio,8}");
        }
    }

    private static string Short(string name) => name.Length <= 14 ? name : "…" + name[^13..];

    private static string Format(double? value) => value switch
    {
        null => "-",
        { } v when double.IsNaN(v) => "NaN",
        { } v when Math.Abs(v) >= 1000 => v.ToString("F0", CultureInfo.InvariantCulture),
        { } v => v.ToString("F4", CultureInfo.InvariantCulture),
    };
}
