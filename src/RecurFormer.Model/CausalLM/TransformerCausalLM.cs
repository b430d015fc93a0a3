using RecurFormer.Model.Caching;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Layers;
using RecurFormer.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>Qwen2 / Llama / Mistral causal LM: embeddings, decoder layers, final norm, LM head (possibly tied).</summary>
public sealed class TransformerCausalLM : nn.Module, ICausalLM
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
    public ComputeTarget Target { get; }

    public ISequenceCache CreateCache() => new DenseSequenceCache(_config.NumHiddenLayers);

    public Tensor Forward(ForwardBatch batch)
    {
        using var scope = NewDisposeScope();
        using var gradMode = batch.Training ? null : no_grad();
        var (cos, sin) = _rope.Tables(batch.Positions(Target.Device), Target.DType);
        var hidden = model.Forward(batch.TokenTensor(Target.Device), cos, sin, batch);
        hidden = hidden.index_select(0, batch.LogitRows(Target.Device));
        var logits = lm_head?.forward(hidden) ?? nn.functional.linear(hidden, model.EmbeddingWeight);
        foreach (var (cache, s) in batch.Caches.Select((c, s) => (c, s)))
        {
            cache.Advance(batch.TokenCount(s));
        }
        return logits.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _rope.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>The <c>model.*</c> part of the state dict: embed_tokens, layers, norm.</summary>
internal sealed class TransformerBackbone : nn.Module
{
#pragma warning disable IDE1006
    private readonly Embedding embed_tokens;
    private readonly nn.Module<Tensor, Tensor> norm;
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

    public Tensor Forward(Tensor tokens, Tensor cos, Tensor sin, ForwardBatch batch)
    {
        using var scope = NewDisposeScope();
        var hidden = embed_tokens.forward(tokens); // [T, hidden]
        foreach (var layer in layers)
        {
            hidden = layer.Forward(hidden, cos, sin, batch);
        }
        return norm.forward(hidden).MoveToOuterDisposeScope();
    }
}
