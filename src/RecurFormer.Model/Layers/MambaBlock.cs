using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>A Mamba model's block: x + mixer(norm(x)), the residual stream kept in float32 when the config says so.</summary>
public sealed class MambaBlock : nn.Module
{
#pragma warning disable IDE1006
    private readonly RmsNorm norm;
    private readonly MambaMixer mixer;
#pragma warning restore IDE1006
    private readonly bool _residualInFp32;
    private readonly ScalarType _dtype;

    public MambaBlock(MambaConfig config, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        norm = RmsNorm.Load(weights, $"{prefix}.norm", config.HiddenSize, config.LayerNormEpsilon);
        mixer = new MambaMixer(config.MixerShape, weights, $"{prefix}.mixer", layer);
        _residualInFp32 = config.ResidualInFp32;
        _dtype = weights.Target.DType;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var residual = _residualInFp32 ? x.to_type(ScalarType.Float32) : x;
        var mixed = mixer.Forward(norm.forward(x.to_type(_dtype)), context);
        return (residual + mixed).MoveToOuterDisposeScope();
    }
}
