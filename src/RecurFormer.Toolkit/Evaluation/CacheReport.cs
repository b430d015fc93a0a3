using System.Text.Json.Nodes;
using RecurFormer.Model.Caching;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// What one sequence's cache costs, as reported in evaluation and conversion JSON: the figures of the model's
/// <see cref="CacheLayout"/> (the same arithmetic the engine budgets with). Full-attention KV grows with every token;
/// windowed groups hold a fixed ring buffer (sinks + window); Mamba mixers hold a fixed conv + SSM state.
/// </summary>
public static class CacheReport
{
    public static JsonObject Of(CacheLayout layout) => new()
    {
        ["kv_dtype"] = layout.KvDType.ToString().ToLowerInvariant(),
        ["kv_bytes_per_token"] = layout.KvBytesPerToken,
        ["state_bytes_per_sequence"] = layout.MambaSlotBytes,
        ["window_bytes_per_sequence"] = layout.WindowSlotBytes,
        ["source_kv_bytes_per_token"] = layout.AllGroupsBytesPerToken,
        ["kv_fraction_kept"] = layout.AllGroupsBytesPerToken == 0 ? 1.0 : (double)layout.KvBytesPerToken / layout.AllGroupsBytesPerToken,
        ["bytes_per_sequence_at_512"] = BytesAt(layout, 512),
        ["bytes_per_sequence_at_2048"] = BytesAt(layout, 2048),
    };

    /// <summary>Bytes of one sequence of exactly <paramref name="tokens"/> tokens (no block rounding: a cost per token).</summary>
    private static long BytesAt(CacheLayout layout, int tokens) => layout.KvBytesPerToken * tokens + layout.SlotBytes;
}
