using System.Text.Json;
using System.Text.Json.Nodes;

namespace RecurFormer.Model.Configuration;

/// <summary>
/// The <c>recurformer</c> object of a converted checkpoint's config.json: which KV groups of which layers are
/// replaced, and by what. A group is one KV head and the query heads that share it; replacing a whole group is what
/// removes cache. <c>mamba</c> groups are computed by one Mamba-1 mixer per layer (fixed-size state);
/// <c>window</c> groups keep their attention weights but see only the first <see cref="WindowSpec.Sinks"/> tokens
/// and the last <see cref="WindowSpec.Size"/> (a fixed-size ring buffer); <c>window_mamba</c> groups do both, as
/// Samba-style hybrids: a window for the recent tokens, and the layer's mixer, whose output is added to theirs, for
/// everything older. See docs/checkpoint-format.md.
/// </summary>
public sealed record HybridLayout
{
    public const int CurrentFormatVersion = 1;

    public int FormatVersion { get; init; } = CurrentFormatVersion;
    public required IReadOnlyList<LayerReplacement> Layers { get; init; }
    public WindowSpec Window { get; init; } = new(64, 4);
    public MambaSpec Mamba { get; init; } = new(2, 16, 4, null);
    public string? SourceModel { get; init; }

    /// <summary>Free-form summary of the analysis that chose the groups (kept verbatim).</summary>
    public JsonNode? Analysis { get; init; }

    public bool ReplacesAnything => Layers.Any(l => l.MambaGroups.Count > 0 || l.WindowGroups.Count > 0 || l.WindowMambaGroups.Count > 0);

    public LayerReplacement ForLayer(int layer) => layer < Layers.Count ? Layers[layer] : LayerReplacement.None;

    public static HybridLayout Nothing(int layers) => new() { Layers = Enumerable.Repeat(LayerReplacement.None, layers).ToArray() };

    /// <summary>
    /// Mistral's sliding-window attention (every query sees its last <paramref name="window"/> tokens) is exactly a
    /// window of that size with no sinks on every group: served with ring buffers, no KV growth past the window.
    /// </summary>
    public static HybridLayout SlidingWindow(int layers, int kvGroups, int window) => new()
    {
        Layers = Enumerable.Repeat(new LayerReplacement([], Enumerable.Range(0, kvGroups).ToArray()), layers).ToArray(),
        Window = new WindowSpec(window, 0),
    };

    internal static HybridLayout? Parse(JsonObject raw, string source, int layers, int kvGroups)
    {
        if (raw["recurformer"] is not JsonObject section)
        {
            return null;
        }
        try
        {
            var version = section["format_version"]?.GetValue<int>() ?? CurrentFormatVersion;
            if (version != CurrentFormatVersion)
            {
                throw new ModelLoadException($"{source}: recurformer.format_version {version} is not supported (this build reads {CurrentFormatVersion})");
            }
            var layerNodes = section["layers"] as JsonArray ?? throw new ModelLoadException($"{source}: recurformer.layers is missing");
            if (layerNodes.Count != layers)
            {
                throw new ModelLoadException($"{source}: recurformer.layers has {layerNodes.Count} entries for {layers} layers");
            }
            var parsed = layerNodes.Select((node, i) => LayerReplacement.Parse(node as JsonObject, source, i, kvGroups)).ToArray();
            var window = section["window"] as JsonObject;
            var size = window?["size"]?.GetValue<int>() ?? 64;
            var sinks = window?["sinks"]?.GetValue<int>() ?? 4;
            if (size < 1 || sinks < 0)
            {
                throw new ModelLoadException($"{source}: recurformer.window needs size ≥ 1 and sinks ≥ 0, not size {size}, sinks {sinks}");
            }
            var mamba = section["mamba"] as JsonObject;
            return new HybridLayout
            {
                FormatVersion = version,
                Layers = parsed,
                Window = new WindowSpec(size, sinks),
                Mamba = new MambaSpec(
                    mamba?["expand"]?.GetValue<int>() ?? 2,
                    mamba?["d_state"]?.GetValue<int>() ?? 16,
                    mamba?["d_conv"]?.GetValue<int>() ?? 4,
                    mamba?["dt_rank"]?.GetValue<int>()),
                SourceModel = section["source_model"]?.GetValue<string>(),
                Analysis = section["analysis"]?.DeepClone(),
            };
        }
        catch (Exception error) when (error is InvalidOperationException or FormatException or JsonException)
        {
            throw new ModelLoadException($"{source}: invalid recurformer section ({error.Message})");
        }
    }

    /// <summary>The <c>recurformer</c> object as written into config.json.</summary>
    public JsonObject ToJson() => new()
    {
        ["format_version"] = FormatVersion,
        ["source_model"] = SourceModel,
        ["window"] = new JsonObject { ["size"] = Window.Size, ["sinks"] = Window.Sinks },
        ["mamba"] = new JsonObject { ["expand"] = Mamba.Expand, ["d_state"] = Mamba.StateSize, ["d_conv"] = Mamba.ConvKernel, ["dt_rank"] = Mamba.TimeStepRank },
        ["layers"] = new JsonArray(Layers.Select(l => (JsonNode)l.ToJson()).ToArray()),
        ["analysis"] = Analysis?.DeepClone(),
    };
}

/// <summary>
/// Replaced KV groups of one layer (sorted, disjoint): computed by the layer's Mamba mixer, attending through a
/// window, or both (<see cref="WindowMambaGroups"/>: window attention plus the mixer's output for the same heads).
/// </summary>
public sealed record LayerReplacement(IReadOnlyList<int> MambaGroups, IReadOnlyList<int> WindowGroups)
{
    public static readonly LayerReplacement None = new([], []);

    /// <summary>Groups that attend through the window and also take the mixer's output, added to the attention's.</summary>
    public IReadOnlyList<int> WindowMambaGroups { get; init; } = [];

    internal static LayerReplacement Parse(JsonObject? node, string source, int layer, int kvGroups)
    {
        var mamba = Groups(node?["mamba_groups"]);
        var window = Groups(node?["window_groups"]);
        var both = Groups(node?["window_mamba_groups"]);
        int[] all = [.. mamba, .. window, .. both];
        foreach (var group in all)
        {
            if (group < 0 || group >= kvGroups)
            {
                throw new ModelLoadException($"{source}: recurformer.layers[{layer}] names KV group {group}, but the model has groups 0..{kvGroups - 1}");
            }
        }
        if (all.Distinct().Count() != all.Length)
        {
            throw new ModelLoadException($"{source}: recurformer.layers[{layer}] lists a KV group twice");
        }
        return new LayerReplacement(mamba.Order().ToArray(), window.Order().ToArray()) { WindowMambaGroups = both.Order().ToArray() };
    }

    private static int[] Groups(JsonNode? node) => node is JsonArray list ? list.Select(n => n!.GetValue<int>()).ToArray() : [];

    /// <summary>The layer's entry in config.json; <c>window_mamba_groups</c> only where there are some, so that other checkpoints read as before.</summary>
    public JsonObject ToJson()
    {
        var json = new JsonObject
        {
            ["mamba_groups"] = new JsonArray(MambaGroups.Select(g => (JsonNode)g).ToArray()),
            ["window_groups"] = new JsonArray(WindowGroups.Select(g => (JsonNode)g).ToArray()),
        };
        if (WindowMambaGroups.Count > 0)
        {
            json["window_mamba_groups"] = new JsonArray(WindowMambaGroups.Select(g => (JsonNode)g).ToArray());
        }
        return json;
    }
}

/// <summary>Windowed groups see the first <paramref name="Sinks"/> tokens and the last <paramref name="Size"/> (the query's own included).</summary>
public sealed record WindowSpec(int Size, int Sinks)
{
    public int Capacity => Size + Sinks;
}

/// <summary>Mamba mixer hyper-parameters for the groups a mixer computes; d_inner = expand × their heads' width.</summary>
public sealed record MambaSpec(int Expand, int StateSize, int ConvKernel, int? TimeStepRank);
