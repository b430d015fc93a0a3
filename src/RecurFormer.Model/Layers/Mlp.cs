using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// SwiGLU feed-forward: down(silu(gate(x)) · up(x)). gate_proj and up_proj are one fused weight [gate | up]
/// (one matrix product); the checkpoint keeps them apart. The CPU kernel path is in Mlp.Kernels.cs.
/// </summary>
public sealed partial class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Linear gate_up_proj;
    private readonly Linear down_proj;
#pragma warning restore IDE1006
    private readonly int _intermediate;

    public Mlp(TransformerConfig config, CheckpointWeights weights, string prefix) : base(prefix)
    {
        _intermediate = config.IntermediateSize;
        gate_up_proj = Linear.LoadFused(weights, $"{prefix}.gate_up_proj", config.HiddenSize, config.MlpBias,
        [
            new($"{prefix}.gate_proj", Linear.Range(0, _intermediate)),
            new($"{prefix}.up_proj", Linear.Range(_intermediate, _intermediate)),
        ]);
        down_proj = Linear.Load(weights, $"{prefix}.down_proj", config.IntermediateSize, config.HiddenSize, config.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, null);

    /// <summary>x [T, hidden] → [T, hidden]; with <paramref name="threads"/>, silu(gate) · up on the CPU takes the SwiGLU kernels.</summary>
    public Tensor Forward(Tensor x, KernelThreads? threads)
    {
        using var scope = NewDisposeScope();
        var gateUp = gate_up_proj.forward(x);
        var hidden = threads is not null && SwiGluFunction.Supports(gateUp)
            ? SwiGluFunction.Apply(gateUp, threads)
            : nn.functional.silu(gateUp.narrow(-1, 0, _intermediate)) * gateUp.narrow(-1, _intermediate, _intermediate);
        return down_proj.forward(hidden).MoveToOuterDisposeScope();
    }
}
