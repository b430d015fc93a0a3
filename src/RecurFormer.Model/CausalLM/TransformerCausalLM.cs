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
    public ComputeTarget Target { get; }

    public IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors() => CheckpointNames.Of(this);

    public void PreparePositions(int positions) => _rope.Prepare(positions);

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
        hidden = hidden.index_select(0, tensor(batch.LogitRows(), device: Target.Device));
        var logits = lm_head?.forward(hidden) ?? nn.functional.linear(hidden, model.EmbeddingWeight);
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            batch.Caches[s].Advance(batch.TokenCount(s));
        }
        return logits.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
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
        var hidden = embed_tokens.forward(tokens); // [T, hidden]
        if (context.Batch.LastLayer is { } last)
        {
            for (var i = 0; i < last; i++)
            {
                hidden = layers[i].Forward(hidden, context);
            }
            return layers[last].AttentionHeads(hidden, context).MoveToOuterDisposeScope();
        }
        foreach (var layer in layers)
        {
            hidden = layer.Forward(hidden, context);
        }
        return norm.forward(hidden).MoveToOuterDisposeScope();
    }
}
