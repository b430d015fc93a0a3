using System.Runtime.CompilerServices;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Kernels;
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
        _kernelWeight = new(() => Kernel.ValuesOf(this.weight));
        _eps = eps;
        RegisterComponents();
    }

    public static RmsNorm Load(CheckpointWeights weights, string prefix, long size, double eps) =>
        new(weights.Load($"{prefix}.weight", size), eps, prefix);

    public override Tensor forward(Tensor input)
    {
        if (RmsNormFunction.Supports(input, weight))
        {
            // On the CPU: one node and one pass each way where a gradient is asked for (training), else the forward
            // pass alone (inference's prefill, the teacher in distillation).
            return (input.requires_grad || weight.requires_grad) && is_grad_enabled()
                ? RmsNormFunction.Apply(input, weight, _eps)
                : RmsNormFunction.Compute(input, weight, _eps);
        }
        using var scope = NewDisposeScope();
        var x = input.to_type(ScalarType.Float32);
        var variance = x.pow(2).mean([-1], keepdim: true);
        x = x * rsqrt(variance + _eps);
        return (weight * x.to_type(input.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The weight as the kernels read it, resolved once by whichever kernel thread comes first. <see cref="Lazy{T}"/>,
    /// not a nullable field: a struct written by one thread can be read half-written by another.
    /// </summary>
    private readonly Lazy<Values> _kernelWeight;

    internal bool KernelsSupport => Kernel.Supports(weight);

    /// <summary>The CPU kernel path: y = RMSNorm(x) for <paramref name="rows"/> rows of <paramref name="size"/>, in float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void Normalize(float* x, float* y, int rows, int size)
    {
        var w = _kernelWeight.Value;
        for (var r = 0; r < rows; r++)
        {
            Kernel.RmsNorm(x + (long)r * size, w, y + (long)r * size, size, (float)_eps);
        }
    }
}
