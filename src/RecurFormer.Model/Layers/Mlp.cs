using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) · up(x)).</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Linear gate_proj;
    private readonly Linear up_proj;
    private readonly Linear down_proj;
#pragma warning restore IDE1006

    public Mlp(TransformerConfig config, CheckpointWeights weights, string prefix) : base(prefix)
    {
        gate_proj = Linear.Load(weights, $"{prefix}.gate_proj", config.HiddenSize, config.IntermediateSize, config.MlpBias);
        up_proj = Linear.Load(weights, $"{prefix}.up_proj", config.HiddenSize, config.IntermediateSize, config.MlpBias);
        down_proj = Linear.Load(weights, $"{prefix}.down_proj", config.IntermediateSize, config.HiddenSize, config.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
    }
}
