using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Analysis;

/// <summary>How recency is measured: windows, the warm-up positions left out, and the calibration sequences.</summary>
public sealed record RecencyOptions(int[] Windows, int Warmup = 64, int SequenceLength = 512, int Samples = 16);

/// <summary>
/// Runs a plain Transformer over calibration sequences with explicit attention probabilities and accumulates,
/// per layer, head and window, the attention mass on the last w keys.
/// </summary>
public sealed class RecencyAnalyzer(ICausalLM model, RecencyOptions options)
{
    private readonly TransformerConfig _config = model.Config as TransformerConfig
        ?? throw new AnalysisFileException($"recency analysis needs a Transformer model, not {model.Config.ModelType}");

    /// <summary>Analyses <paramref name="sequences"/> (token ids); <paramref name="progress"/> gets the number done.</summary>
    public RecencyReport Analyze(IReadOnlyList<long[]> sequences, string sourceModel, IProgress<int>? progress = null)
    {
        if (_config.Hybrid.ReplacesAnything)
        {
            throw new AnalysisFileException("recency analysis needs the source model: this checkpoint already has replaced KV groups");
        }
        var layers = _config.NumHiddenLayers;
        var heads = _config.NumAttentionHeads;
        var windows = options.Windows;
        var sums = new double[layers, heads, windows.Length];
        long queries = 0;
        for (var s = 0; s < sequences.Count; s++)
        {
            using var scope = NewDisposeScope();
            using var capture = new AttentionCapture { RecordsProbabilities = true };
            using var cache = model.CreateCache(sequences[s].Length);
            model.Forward(new ForwardBatch([sequences[s]], cache.Sequences) { Capture = capture });
            for (var layer = 0; layer < layers; layer++)
            {
                var (layerSums, count) = WindowMass(capture.Get(layer), windows, options.Warmup);
                var values = layerSums.data<double>().ToArray(); // [heads, windows]
                for (var h = 0; h < heads; h++)
                {
                    for (var w = 0; w < windows.Length; w++)
                    {
                        sums[layer, h, w] += values[h * windows.Length + w];
                    }
                }
                if (layer == 0)
                {
                    queries += count;
                }
            }
            progress?.Report(s + 1);
        }
        if (queries == 0)
        {
            throw new AnalysisFileException($"no query position past the warm-up of {options.Warmup}: use longer sequences or a smaller --warmup");
        }
        var byHead = new double[layers][][];
        var byGroup = new double[layers][][];
        var groupSize = _config.GroupSize;
        for (var layer = 0; layer < layers; layer++)
        {
            byHead[layer] = new double[heads][];
            for (var h = 0; h < heads; h++)
            {
                byHead[layer][h] = Enumerable.Range(0, windows.Length).Select(w => sums[layer, h, w] / queries).ToArray();
            }
            byGroup[layer] = Enumerable.Range(0, _config.NumKeyValueHeads)
                .Select(g => Enumerable.Range(0, windows.Length).Select(w => Enumerable.Range(g * groupSize, groupSize).Average(h => byHead[layer][h][w])).ToArray())
                .ToArray();
        }
        return new RecencyReport
        {
            SourceModel = sourceModel,
            Layers = layers,
            Heads = heads,
            KvGroups = _config.NumKeyValueHeads,
            Windows = windows,
            Warmup = options.Warmup,
            SequenceLength = sequences.Count > 0 ? sequences.Max(x => x.Length) : 0,
            Samples = sequences.Count,
            ByLayerHeadWindow = byHead,
            ByLayerGroupWindow = byGroup,
        };
    }

    /// <summary>
    /// probabilities [heads, n, n] of one sequence (query i at position i, keys 0..i) → the summed mass on the last
    /// w keys over the queries at positions ≥ warmup, [heads, windows] float64, and the number of such queries.
    /// </summary>
    public static (Tensor Sums, long Queries) WindowMass(Tensor probabilities, int[] windows, int warmup)
    {
        var n = probabilities.shape[1];
        var m = probabilities.shape[2];
        if (n <= warmup)
        {
            return (zeros(probabilities.shape[0], windows.Length, dtype: ScalarType.Float64), 0);
        }
        using var scope = NewDisposeScope();
        var p = probabilities.narrow(1, warmup, n - warmup).to_type(ScalarType.Float64);   // [H, q, m]
        var queryPositions = (arange(warmup, n) + (m - n)).unsqueeze(1);                   // [q, 1]
        var keyPositions = arange(m).unsqueeze(0);                                         // [1, m]
        var columns = windows.Select(w =>
        {
            var recent = (keyPositions <= queryPositions).logical_and(keyPositions > queryPositions - w);
            return (p * recent.to_type(ScalarType.Float64)).sum([1, 2]);                  // [H]
        }).ToArray();
        return (stack(columns, 1).MoveToOuterDisposeScope(), n - warmup);
    }
}
