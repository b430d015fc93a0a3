using System.Text.Json;
using System.Text.Json.Nodes;

namespace RecurFormer.Toolkit.Analysis;

/// <summary>
/// Recency ratios of a model: for head h and window w, the share of the head's attention mass on the last w keys
/// (the query's own position included), averaged over query positions ≥ <see cref="Warmup"/> and over the sampled
/// sequences. Per KV group: the mean over the query heads that share the KV head. Indexing: [layer][head][window].
/// </summary>
public sealed record RecencyReport
{
    public required string SourceModel { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvGroups { get; init; }
    public required int[] Windows { get; init; }
    public required int Warmup { get; init; }
    public required int SequenceLength { get; init; }
    public required int Samples { get; init; }
    public required double[][][] ByLayerHeadWindow { get; init; }
    public required double[][][] ByLayerGroupWindow { get; init; }

    public int GroupSize => Heads / KvGroups;

    public int WindowIndex(int window) => Array.IndexOf(Windows, window) is var i and >= 0
        ? i
        : throw new AnalysisFileException($"the analysis has windows {string.Join(",", Windows)}, not {window}");

    public JsonObject ToJson() => new()
    {
        ["description"] = "Share of each attention head's probability mass on the last w keys (the query's own position included), averaged over query positions >= warmup of `samples` sequences of `sequence_length` tokens; per KV group the mean of its query heads.",
        ["source_model"] = SourceModel,
        ["layers"] = Layers,
        ["heads"] = Heads,
        ["kv_groups"] = KvGroups,
        ["windows"] = new JsonArray(Windows.Select(w => (JsonNode)w).ToArray()),
        ["warmup"] = Warmup,
        ["sequence_length"] = SequenceLength,
        ["samples"] = Samples,
        ["ratio_by_layer_head_window"] = Nested(ByLayerHeadWindow),
        ["ratio_by_layer_group_window"] = Nested(ByLayerGroupWindow),
    };

    public void Save(string path) => File.WriteAllText(path, ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>Reads an analysis file written by <see cref="Save"/>; a file of another shape is an <see cref="AnalysisFileException"/>.</summary>
    public static RecencyReport Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new AnalysisFileException($"{path}: file not found");
        }
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new AnalysisFileException($"{path}: not a JSON object");
            var windows = root["windows"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();
            var report = new RecencyReport
            {
                SourceModel = root["source_model"]?.GetValue<string>() ?? "",
                Layers = root["layers"]!.GetValue<int>(),
                Heads = root["heads"]!.GetValue<int>(),
                KvGroups = root["kv_groups"]!.GetValue<int>(),
                Windows = windows,
                Warmup = root["warmup"]?.GetValue<int>() ?? 0,
                SequenceLength = root["sequence_length"]?.GetValue<int>() ?? 0,
                Samples = root["samples"]?.GetValue<int>() ?? 0,
                ByLayerHeadWindow = Parse(root["ratio_by_layer_head_window"]!),
                ByLayerGroupWindow = Parse(root["ratio_by_layer_group_window"]!),
            };
            report.CheckShape(path);
            return report;
        }
        catch (Exception error) when (error is JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            var reason = error is NullReferenceException ? "a required field is missing" : error.Message;
            throw new AnalysisFileException($"{path}: not a recency analysis written by 'recurformer analyze' ({reason})");
        }
    }

    private void CheckShape(string path)
    {
        bool Fits(double[][][] values, int inner) =>
            values.Length == Layers && values.All(l => l.Length == inner && l.All(h => h.Length == Windows.Length));
        if (!Fits(ByLayerHeadWindow, Heads) || !Fits(ByLayerGroupWindow, KvGroups) || KvGroups <= 0 || Heads % KvGroups != 0)
        {
            throw new AnalysisFileException($"{path}: the ratio arrays do not have the shape layers × heads (or groups) × windows that the file declares");
        }
    }

    private static JsonArray Nested(double[][][] values) => new(values.Select(layer =>
        (JsonNode)new JsonArray(layer.Select(head => (JsonNode)new JsonArray(head.Select(v => (JsonNode)Math.Round(v, 6)).ToArray())).ToArray())).ToArray());

    private static double[][][] Parse(JsonNode node) => node.AsArray()
        .Select(layer => layer!.AsArray().Select(head => head!.AsArray().Select(v => v!.GetValue<double>()).ToArray()).ToArray()).ToArray();
}

/// <summary>An analysis file that cannot be read, or that does not match the model it is used with.</summary>
public sealed class AnalysisFileException(string message) : Exception(message);
