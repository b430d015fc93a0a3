using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// One AdamW update of one parameter (torch.optim.AdamW's, with the clipping scale of clip_grad_norm_ folded in) as a
/// single pass over the parameter, its gradient and its two moments, on the CPU in float32.
/// Why: the update is memory-bound, and as libtorch operations it is ten passes (scale the gradient, decay the
/// weight, two for each moment, square root, divide, add ε, the step) and a temporary the size of the weight. In a
/// stage-1 step of 6.8M mixer weights that was 6–8 ms of ~180 (docs/conversion.md, eighth round).
/// The gradient is read, not scaled in place: nothing reads it after the step.
/// </summary>
public static unsafe class AdamWKernel
{
    /// <summary>The scalars of one update: <paramref name="StepSize"/> is −lr / (1 − β1^t), <paramref name="Root2"/> √(1 − β2^t).</summary>
    public readonly record struct Update(float Clip, float Decay, float Beta1, float Beta2, float Root2, float StepSize, float Epsilon);

    /// <summary>Whether the four tensors can take the kernel: float32, contiguous, on the CPU, with 512-bit vectors.</summary>
    public static bool Supports(params Tensor[] tensors) =>
        Kernel.IsAccelerated && tensors.All(t => t.device_type == DeviceType.CPU && t.dtype == ScalarType.Float32 && t.is_contiguous());

    /// <summary>
    /// g′ = clip·g; p ← decay·p; m ← β1·m + (1 − β1)·g′; v ← β2·v + (1 − β2)·g′²; p ← p + stepSize · m / (√v / root2 + ε):
    /// torch's update, with the moments as fused multiply-adds (so not torch's bits: within 1e-6 in the tests).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Step(Tensor parameter, Tensor gradient, Tensor average, Tensor square, Update u)
    {
        var count = parameter.numel();
        if (gradient.numel() != count || average.numel() != count || square.numel() != count)
        {
            throw new ArgumentException("AdamW: the parameter, its gradient and its moments differ in size");
        }
        float* p = TensorMemory.Pointer<float>(parameter), g = TensorMemory.Pointer<float>(gradient);
        float* m = TensorMemory.Pointer<float>(average), v = TensorMemory.Pointer<float>(square);
        var (keep1, keep2) = (1 - u.Beta1, 1 - u.Beta2);
        Vector512<float> clip = Vector512.Create(u.Clip), decay = Vector512.Create(u.Decay), beta1 = Vector512.Create(u.Beta1),
            beta2 = Vector512.Create(u.Beta2), one1 = Vector512.Create(keep1), one2 = Vector512.Create(keep2),
            root2 = Vector512.Create(u.Root2), stepSize = Vector512.Create(u.StepSize), epsilon = Vector512.Create(u.Epsilon);
        long i = 0;
        for (; i + 16 <= count; i += 16)
        {
            var grad = Vector512.Load(g + i) * clip;
            var mean = Vector512.FusedMultiplyAdd(grad, one1, Vector512.Load(m + i) * beta1);
            var variance = Vector512.FusedMultiplyAdd(grad * grad, one2, Vector512.Load(v + i) * beta2);
            var denominator = Vector512.Sqrt(variance) / root2 + epsilon;
            var weight = Vector512.Load(p + i) * decay;
            Vector512.FusedMultiplyAdd(stepSize, mean / denominator, weight).Store(p + i);
            mean.Store(m + i);
            variance.Store(v + i);
        }
        for (; i < count; i++)
        {
            var grad = g[i] * u.Clip;
            var mean = MathF.FusedMultiplyAdd(grad, keep1, m[i] * u.Beta1);
            var variance = MathF.FusedMultiplyAdd(grad * grad, keep2, v[i] * u.Beta2);
            var denominator = MathF.Sqrt(variance) / u.Root2 + u.Epsilon;
            p[i] = MathF.FusedMultiplyAdd(u.StepSize, mean / denominator, p[i] * u.Decay);
            m[i] = mean;
            v[i] = variance;
        }
        GC.KeepAlive(parameter);
        GC.KeepAlive(gradient);
        GC.KeepAlive(average);
        GC.KeepAlive(square);
    }
}
