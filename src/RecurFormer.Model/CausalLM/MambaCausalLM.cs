using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Layers;
using RecurFormer.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>Mamba-1 causal LM as transformers' MambaForCausalLM: <c>backbone.*</c> and a (usually tied) LM head.</summary>
public sealed class MambaCausalLM : nn.Module, ICausalLM
{
#pragma warning disable IDE1006
    private readonly MambaBackbone backbone;
    private readonly Linear? lm_head;
#pragma warning restore IDE1006
    private readonly MambaConfig _config;

    public MambaCausalLM(MambaConfig config, CheckpointWeights weights) : base("causal_lm")
    {
        _config = config;
        Target = weights.Target;
        backbone = new MambaBackbone(config, weights, "backbone");
        lm_head = config.TieWordEmbeddings ? null : Linear.Load(weights, "lm_head", config.HiddenSize, config.VocabSize, hasBias: false);
        RegisterComponents();
    }

    public ModelConfig Config => _config;
    public ComputeTarget Target { get; }

    public IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors() => CheckpointNames.Of(this);

    public Tensor Forward(ForwardBatch batch)
    {
        if (batch.StartFrom is not null || batch.LeaveResidual is not null)
        {
            throw new ArgumentException("a pure Mamba model takes no residual handoff (its layers are no Transformer's)");
        }
        using var scope = NewDisposeScope();
        using var gradMode = batch.Training ? null : no_grad();
        using var context = new ForwardContext(batch, Target.Device, Target.DType);
        var hidden = backbone.Forward(tensor(batch.PackedTokens(), device: Target.Device), context);
        hidden = hidden.index_select(0, tensor(batch.LogitRows(), device: Target.Device)).to_type(Target.DType);
        var logits = lm_head?.forward(hidden) ?? nn.functional.linear(hidden, backbone.EmbeddingWeight);
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            batch.Caches[s].Advance(batch.TokenCount(s));
        }
        return (batch.LogitsAsComputed ? logits : logits.to_type(ScalarType.Float32)).MoveToOuterDisposeScope();
    }
}

/// <summary>embeddings, layers, norm_f.</summary>
internal sealed class MambaBackbone : nn.Module
{
#pragma warning disable IDE1006
    private readonly Embedding embeddings;
    private readonly TorchSharp.Modules.ModuleList<MambaBlock> layers;
    private readonly RmsNorm norm_f;
#pragma warning restore IDE1006

    public MambaBackbone(MambaConfig config, CheckpointWeights weights, string prefix) : base(prefix)
    {
        embeddings = Embedding.Load(weights, $"{prefix}.embeddings", config.VocabSize, config.HiddenSize);
        layers = new TorchSharp.Modules.ModuleList<MambaBlock>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(i => new MambaBlock(config, weights, $"{prefix}.layers.{i}", i)).ToArray());
        norm_f = RmsNorm.Load(weights, $"{prefix}.norm_f", config.HiddenSize, config.LayerNormEpsilon);
        RegisterComponents();
    }

    public Tensor EmbeddingWeight => embeddings.Weight;

    public Tensor Forward(Tensor tokens, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var hidden = embeddings.forward(tokens);
        foreach (var layer in layers)
        {
            hidden = layer.Forward(hidden, context);
        }
        return norm_f.forward(hidden.to_type(EmbeddingWeight.dtype)).MoveToOuterDisposeScope();
    }
}
