using System.Text.Json.Nodes;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Layers;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// What one sequence's cache costs, at the compute dtype for attention and float32 for Mamba state (as the engine
/// stores it): full-attention KV grows with every token; windowed groups hold a fixed ring buffer (sinks + window);
/// Mamba mixers hold a fixed conv + SSM state.
/// </summary>
public sealed record CacheCost(long KvBytesPerToken, long WindowBytesPerSequence, long StateBytesPerSequence, long SourceKvBytesPerToken)
{
    public static CacheCost Of(TransformerConfig config, ScalarType dtype)
    {
        var element = dtype switch { ScalarType.Float32 => 4, ScalarType.Float64 => 8, _ => 2 };
        long perGroupToken = 2L * config.HeadDim * element; // key + value
        long kv = 0, window = 0, state = 0;
        for (var layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            var heads = config.Heads(layer);
            kv += heads.FullGroups.Length * perGroupToken;
            window += heads.WindowGroups.Length * perGroupToken * config.Hybrid.Window.Capacity;
            if (heads.MambaGroups.Length > 0)
            {
                var spec = config.Hybrid.Mamba;
                var output = heads.MambaOutputSize;
                state += new MambaMixerShape(config.HiddenSize, output, spec.Expand * output, spec.StateSize, spec.ConvKernel, 1, false, true).StateBytes;
            }
        }
        return new CacheCost(kv, window, state, config.NumHiddenLayers * config.NumKeyValueHeads * perGroupToken);
    }

    /// <summary>Bytes of one sequence of <paramref name="tokens"/> tokens.</summary>
    public long BytesAt(int tokens) => KvBytesPerToken * tokens + WindowBytesPerSequence + StateBytesPerSequence;

    public JsonObject ToJson() => new()
    {
        ["kv_bytes_per_token"] = KvBytesPerToken,
        ["state_bytes_per_sequence"] = StateBytesPerSequence,
        ["window_bytes_per_sequence"] = WindowBytesPerSequence,
        ["source_kv_bytes_per_token"] = SourceKvBytesPerToken,
        ["kv_fraction_kept"] = SourceKvBytesPerToken == 0 ? 1.0 : (double)KvBytesPerToken / SourceKvBytesPerToken,
        ["bytes_per_sequence_at_512"] = BytesAt(512),
        ["bytes_per_sequence_at_2048"] = BytesAt(2048),
    };
}
