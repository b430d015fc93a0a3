using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Model.Caching;

/// <summary>
/// What one sequence's cache consists of, per layer, derived from the model config: full-attention KV groups
/// (paged blocks), windowed groups (a ring buffer of sinks + window), and Mamba state (fixed size). All byte
/// figures use the dtype actually stored (KV in the KV-cache dtype, Mamba state in float32). The one place cache
/// sizes are computed: the engine's budget, the toolkit's cost tables and the benchmarks all read it.
/// </summary>
public sealed class CacheLayout
{
    public CacheLayout(ModelConfig config, ScalarType kvDType, int blockSize = 16)
    {
        KvDType = kvDType;
        KvElementBytes = ElementBytes(kvDType);
        BlockSize = blockSize;
        Layers = config.NumHiddenLayers;
        FullGroups = new int[Layers];
        WindowGroups = new int[Layers];
        MambaShapes = new MambaMixerShape?[Layers];
        switch (config)
        {
            case TransformerConfig transformer:
                HeadDim = transformer.HeadDim;
                Window = transformer.Hybrid.Window;
                for (var layer = 0; layer < Layers; layer++)
                {
                    var heads = transformer.Heads(layer);
                    FullGroups[layer] = heads.FullGroups.Length;
                    WindowGroups[layer] = heads.WindowGroups.Length;
                    MambaShapes[layer] = transformer.MixerShape(layer);
                }
                AllGroupsBytesPerToken = 2L * Layers * transformer.NumKeyValueHeads * HeadDim * KvElementBytes;
                break;
            case MambaConfig mamba:
                Array.Fill(MambaShapes, mamba.MixerShape);
                IsRecurrentModel = true;
                break;
            default:
                throw new ArgumentException($"no cache layout for model type {config.ModelType}");
        }
        BlockBytes = 2L * FullGroups.Sum() * BlockSize * HeadDim * KvElementBytes;
        WindowSlotBytes = 2L * WindowGroups.Sum() * Window.Capacity * HeadDim * KvElementBytes;
        MambaSlotBytes = MambaShapes.Sum(s => s?.StateBytes ?? 0);
    }

    public int Layers { get; }
    public int HeadDim { get; }
    public int BlockSize { get; }
    public ScalarType KvDType { get; }
    public int KvElementBytes { get; }
    public WindowSpec Window { get; } = new(0, 0);

    /// <summary>A plain Mamba model: nothing attends, nothing was replaced.</summary>
    public bool IsRecurrentModel { get; }

    public int[] FullGroups { get; }
    public int[] WindowGroups { get; }
    public MambaMixerShape?[] MambaShapes { get; }

    /// <summary>K and V of one block (BlockSize tokens) over every layer's full groups.</summary>
    public long BlockBytes { get; }

    /// <summary>Ring buffers (sinks + window, K and V) of one sequence over every layer's windowed groups.</summary>
    public long WindowSlotBytes { get; }

    /// <summary>Conv + SSM state of one sequence over every layer's Mamba mixer (float32).</summary>
    public long MambaSlotBytes { get; }

    /// <summary>Attention KV per token if every KV group of every layer attended (the source Transformer).</summary>
    public long AllGroupsBytesPerToken { get; }

    /// <summary>KV bytes per token actually cached (full groups only).</summary>
    public long KvBytesPerToken => BlockBytes / BlockSize;

    /// <summary>Fixed bytes per sequence: window rings + Mamba state.</summary>
    public long SlotBytes => WindowSlotBytes + MambaSlotBytes;

    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    /// <summary>Cache bytes one sequence of <paramref name="tokens"/> tokens holds.</summary>
    public long SequenceBytes(int tokens) => BlocksFor(tokens) * BlockBytes + SlotBytes;

    /// <summary>What the same sequence would hold with nothing replaced (for a Mamba model: the same).</summary>
    public long SequenceBytesWithoutReplacement(int tokens) =>
        IsRecurrentModel ? SlotBytes : (long)BlocksFor(tokens) * BlockSize * AllGroupsBytesPerToken;

    /// <summary>Sequences of <paramref name="tokens"/> tokens that fit <paramref name="budget"/> bytes, block rounding included.</summary>
    public long SequencesThatFit(long budget, int tokens) => budget / SequenceBytes(tokens);

    /// <summary>Total KV groups replaced (Mamba or window) over all layers.</summary>
    public int ReplacedGroups(ModelConfig config) => config is TransformerConfig t
        ? Enumerable.Range(0, Layers).Sum(l => t.NumKeyValueHeads - FullGroups[l])
        : 0;

    public static int ElementBytes(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        _ => throw new ArgumentException($"unsupported KV cache dtype {dtype}"),
    };
}
