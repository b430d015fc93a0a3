using RecurFormer.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>RMSNorm as HuggingFace computes it: normalise in float32, cast back, then scale.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Parameter weight;
#pragma warning restore IDE1006
    private readonly double _eps;

    public RmsNorm(Tensor weight, double eps, string name = "norm") : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        _eps = eps;
        RegisterComponents();
    }

    public static RmsNorm Load(CheckpointWeights weights, string prefix, long size, double eps) =>
        new(weights.Load($"{prefix}.weight", size), eps, prefix);

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input.to_type(ScalarType.Float32);
        var variance = x.pow(2).mean([-1], keepdim: true);
        x = x * rsqrt(variance + _eps);
        return (weight * x.to_type(input.dtype)).MoveToOuterDisposeScope();
    }
}
