using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Layers;
using RecurFormer.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// Qwen2 / Llama / Mistral causal LM: embeddings, decoder layers, final norm, LM head (possibly tied). A decode
/// batch small enough for the hand-written CPU kernels takes that path (TransformerCausalLM.Kernels.cs); everything
/// else (prefill, large batches, CUDA, training, analysis) runs the layers' libtorch forward.
/// </summary>
public sealed partial class TransformerCausalLM : nn.Module, ICausalLM
{
#pragma warning disable IDE1006
    private readonly TransformerBackbone model;
    private readonly Linear? lm_head;
#pragma warning restore IDE1006
    private readonly RotaryEmbedding _rope;
    private readonly TransformerConfig _config;

    public TransformerCausalLM(TransformerConfig config, CheckpointWeights weights) : base("causal_lm")
    {
        _config = config;
        Target = weights.Target;
        model = new TransformerBackbone(config, weights, "model");
        lm_head = config.TieWordEmbeddings
            ? null
            : Linear.Load(weights, "lm_head", config.HiddenSize, config.VocabSize, hasBias: false);
        _rope = new RotaryEmbedding(config.Rope, config.HeadDim, Target.Device);
        RegisterComponents();
    }

    public ModelConfig Config => _config;

    /// <summary>The decoder layers, in order (<c>model.layers.i</c>).</summary>
    public IReadOnlyList<DecoderLayer> Layers => model.Layers;

    /// <summary>The token embedding [vocab, hidden] (<c>model.embed_tokens.weight</c>; also the LM head when tied).</summary>
    public Tensor EmbeddingWeight => model.EmbeddingWeight;

    public ComputeTarget Target { get; }

    public IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors() => CheckpointNames.Of(this);

    public void PreparePositions(int positions) => _rope.Prepare(positions);

    /// <summary>
    /// How many leading decoder layers of this model compute what <paramref name="other"/>'s do: the same shapes, norm
    /// ε and RoPE, equal embeddings, then layers plain in both (no replaced group) with equal weights, dtype and values.
    /// A converted student shares its teacher's layers below the first replaced one, until they are trained
    /// (<see cref="ResidualHandoff"/>). Compares the weights: call it once, not per step.
    /// </summary>
    public int SameLayersAs(TransformerCausalLM other)
    {
        using var scope = NewDisposeScope();
        var (mine, theirs) = (_config, other._config);
        if (mine.HiddenSize != theirs.HiddenSize || mine.VocabSize != theirs.VocabSize || mine.RmsNormEps != theirs.RmsNormEps
            || mine.Rope != theirs.Rope || !Same(model.EmbeddingWeight, other.model.EmbeddingWeight))
        {
            return 0;
        }
        var count = 0;
        while (count < Math.Min(Layers.Count, other.Layers.Count) && mine.Heads(count).IsPlain && theirs.Heads(count).IsPlain
            && SameWeights(Layers[count], other.Layers[count]))
        {
            count++;
        }
        return count;
    }

    private static bool SameWeights(nn.Module a, nn.Module b)
    {
        var (x, y) = (a.named_parameters().ToArray(), b.named_parameters().ToArray());
        return x.Length == y.Length && x.Zip(y).All(p => p.First.name == p.Second.name && Same(p.First.parameter, p.Second.parameter));
    }

    private static bool Same(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.device_type == b.device_type && a.device_index == b.device_index && a.shape.SequenceEqual(b.shape) && a.equal(b).all().item<bool>();

    public Tensor Forward(ForwardBatch batch)
    {
        if (CanDecodeWithKernels(batch))
        {
            return DecodeWithKernels(batch);
        }
        using var scope = NewDisposeScope();
        using var gradMode = batch.Training ? null : no_grad();
        using var context = new ForwardContext(batch, Target.Device, Target.DType);
        (context.Cos, context.Sin) = _rope.Tables(batch.Positions(), Target.DType);
        var hidden = model.Forward(tensor(batch.PackedTokens(), device: Target.Device), context);
        if (batch.LastLayer is not null)
        {
            return hidden.MoveToOuterDisposeScope();
        }
        var rows = batch.LogitRows();
        if (rows.Length < batch.TotalTokens)
        {
            hidden = hidden.index_select(0, tensor(rows, device: Target.Device));   // (every row, in order, needs no copy)
        }
        var logits = lm_head?.forward(hidden) ?? nn.functional.linear(hidden, model.EmbeddingWeight);
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            batch.Caches[s].Advance(batch.TokenCount(s));
        }
        return (batch.LogitsAsComputed ? logits : logits.to_type(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _rope.Dispose();
            DisposeKernels();
        }
        base.Dispose(disposing);
    }
}

/// <summary>The <c>model.*</c> part of the state dict: embed_tokens, layers, norm.</summary>
internal sealed class TransformerBackbone : nn.Module
{
#pragma warning disable IDE1006
    private readonly Embedding embed_tokens;
    private readonly RmsNorm norm;
    private readonly TorchSharp.Modules.ModuleList<DecoderLayer> layers;
#pragma warning restore IDE1006

    public TransformerBackbone(TransformerConfig config, CheckpointWeights weights, string prefix) : base(prefix)
    {
        embed_tokens = Embedding.Load(weights, $"{prefix}.embed_tokens", config.VocabSize, config.HiddenSize);
        layers = new TorchSharp.Modules.ModuleList<DecoderLayer>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(i => new DecoderLayer(config, weights, $"{prefix}.layers.{i}", i)).ToArray());
        norm = RmsNorm.Load(weights, $"{prefix}.norm", config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    public Tensor EmbeddingWeight => embed_tokens.Weight;
    public IReadOnlyList<DecoderLayer> Layers => [.. layers];
    public RmsNorm Norm => norm;

    public Tensor Forward(Tensor tokens, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var batch = context.Batch;
        var (first, hidden) = batch.StartFrom is { } start
            ? (start.Layer, start.StreamFor(tokens.shape[0], EmbeddingWeight.shape[1]))
            : (0, embed_tokens.forward(tokens)); // [T, hidden]
        var end = batch.LastLayer ?? layers.Count;
        if (first > end)
        {
            throw new ArgumentException($"the forward starts at layer {first}, past the layer it stops at ({end})");
        }
        for (var i = first; i < end; i++)
        {
            batch.LeaveResidual?.LeaveAt(i, hidden);
            hidden = layers[i].Forward(hidden, context);
        }
        batch.LeaveResidual?.LeaveAt(end, hidden);
        return (batch.LastLayer is { } last ? layers[last].AttentionHeads(hidden, context) : norm.forward(hidden)).MoveToOuterDisposeScope();
    }
}
