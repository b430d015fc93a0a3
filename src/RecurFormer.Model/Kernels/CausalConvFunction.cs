using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// The Mamba mixer's causal depthwise convolution and the SiLU after it, as one differentiable operation for training
/// on the CPU: y_t = SiLU(b + Σ_k w_k x_{t−K+1+k}) per channel (zeros before each sequence's start). libtorch runs a
/// depthwise conv1d as one tiny matrix product per channel (im2col + GEMM), then SiLU and their backward as separate
/// passes: five passes over [tokens, channels] and a dozen allocations, where these kernels make one pass forward
/// and two backward (the pre-activation is recomputed, not stored), 16 channels per 512-bit vector, channel blocks
/// split across threads.
/// </summary>
public sealed unsafe class CausalConvFunction : SingleTensorFunction<CausalConvFunction>
{
    private const int Lanes = SelectiveScan.Lanes;

    public override string Name => "CausalConvSilu";

    /// <summary>
    /// x [S, L, dInner] (S sequences of L tokens), weight [dInner, 1, K], bias [dInner] or null; float32 on the CPU
    /// (<see cref="SelectiveScanFunction.Supports"/>). Returns SiLU(conv(x)) [S, L, dInner], contiguous.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias, KernelThreads? threads = null) =>
        apply(x, weight, bias ?? zeros(weight.shape[0], device: weight.device), threads ?? KernelThreads.ForThisProcess);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, weight, bias) = (((Tensor)vars[0]).contiguous(), (Tensor)vars[1], (Tensor)vars[2]);
        var threads = (KernelThreads)vars[3];
        ctx.save_for_backward([x, weight, bias]);
        ctx.save_data("threads", threads);
        return Compute(x, weight, bias, threads);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (gradX, gradWeight, gradBias) = Gradients(saved[0], saved[1], saved[2], grad_output, (KernelThreads)ctx.get_data("threads"));
        return [gradX, gradWeight, gradBias, null!];
    }

    /// <summary>
    /// SiLU(conv(x)) without autograd: x [S, L, dInner] contiguous, weight [dInner, 1, K], bias [dInner]; float32 on the
    /// CPU. The forward of <see cref="Apply"/>, and of training code that computes its own gradients (distillation's stage 1).
    /// </summary>
    public static Tensor Compute(Tensor x, Tensor weight, Tensor bias, KernelThreads threads)
    {
        var shape = new Shape(x, weight);
        var y = empty_like(x);
        var taps = Taps(weight, shape);
        var input = TensorMemory.Pointer<float>(x);
        var output = TensorMemory.Pointer<float>(y);
        var w = TensorMemory.Pointer<float>(taps);
        var contiguousBias = bias.contiguous();
        var b = TensorMemory.Pointer<float>(contiguousBias);
        threads.Run(thread =>
        {
            var lane = stackalloc float[Lanes];
            var (start, end) = threads.Share(thread, shape.Inner, Lanes);
            for (var first = start; first < end; first += Lanes)
            {
                Forward(shape, input, output, w, b, first, Math.Min(Lanes, end - first), lane);
            }
        });
        GC.KeepAlive(taps);
        GC.KeepAlive(contiguousBias);
        return y;
    }

    /// <summary>The gradients of <see cref="Compute"/> given ∂L/∂y: (∂x [S, L, dInner], ∂weight [dInner, 1, K], ∂bias [dInner]).</summary>
    public static (Tensor X, Tensor Weight, Tensor Bias) Gradients(Tensor x, Tensor weight, Tensor bias, Tensor gradY, KernelThreads threads)
    {
        x = x.contiguous();
        var shape = new Shape(x, weight);
        gradY = gradY.contiguous();
        var gradX = empty_like(x);
        var gradTaps = zeros(shape.Kernel, shape.Inner);
        var gradBias = zeros(shape.Inner);
        var taps = Taps(weight, shape);
        var contiguousBias = bias.contiguous();
        var pointers = new BackwardPointers(TensorMemory.Pointer<float>(x), TensorMemory.Pointer<float>(gradY), TensorMemory.Pointer<float>(gradX),
            TensorMemory.Pointer<float>(taps), TensorMemory.Pointer<float>(contiguousBias), TensorMemory.Pointer<float>(gradTaps), TensorMemory.Pointer<float>(gradBias));
        threads.Run(thread =>
        {
            var lane = stackalloc float[Lanes];
            // ∂L/∂(pre-activation) of one block of channels for a whole sequence: T vectors, reused for every sequence.
            var gradPre = (Vector512<float>*)NativeMemory.AlignedAlloc((nuint)(shape.Tokens * sizeof(Vector512<float>)), 64);
            try
            {
                var (start, end) = threads.Share(thread, shape.Inner, Lanes);
                for (var first = start; first < end; first += Lanes)
                {
                    Backward(shape, pointers, first, Math.Min(Lanes, end - first), gradPre, lane);
                }
            }
            finally
            {
                NativeMemory.AlignedFree(gradPre);
            }
        });
        GC.KeepAlive(x);
        GC.KeepAlive(gradY);
        GC.KeepAlive(taps);
        GC.KeepAlive(contiguousBias);
        return (gradX, gradTaps.t().reshape(weight.shape).contiguous(), gradBias);
    }

    private readonly record struct Shape(int Sequences, int Tokens, int Inner, int Kernel)
    {
        public Shape(Tensor x, Tensor weight) : this((int)x.shape[0], (int)x.shape[1], (int)x.shape[2], (int)weight.shape[^1])
        {
        }
    }

    private readonly struct BackwardPointers(float* x, float* gradY, float* gradX, float* taps, float* bias, float* gradTaps, float* gradBias)
    {
        public readonly float* X = x, GradY = gradY, GradX = gradX, Taps = taps, Bias = bias, GradTaps = gradTaps, GradBias = gradBias;
    }

    /// <summary>The weights as [K, dInner]: tap k of 16 neighbouring channels is one vector load.</summary>
    private static Tensor Taps(Tensor weight, Shape shape) => weight.detach().reshape(shape.Inner, shape.Kernel).t().contiguous();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Forward(Shape shape, float* x, float* y, float* taps, float* bias, int first, int count, float* lane)
    {
        var (tokens, inner, kernel) = (shape.Tokens, shape.Inner, shape.Kernel);
        var b = SelectiveScan.Load(bias + first, count, lane);
        for (var s = 0; s < shape.Sequences; s++)
        {
            var rows = (long)s * tokens;
            for (var t = 0; t < tokens; t++)
            {
                var sum = b;
                for (var k = Math.Max(0, kernel - 1 - t); k < kernel; k++)
                {
                    var w = SelectiveScan.Load(taps + (long)k * inner + first, count, lane);
                    sum = Vector512.FusedMultiplyAdd(w, SelectiveScan.Load(x + (rows + t - kernel + 1 + k) * inner + first, count, lane), sum);
                }
                SelectiveScan.Store(FastExp.Silu(sum), y + (rows + t) * inner + first, count, lane);
            }
        }
    }

    /// <summary>
    /// With g_t = ∂L/∂y_t · SiLU'(p_t) (p recomputed): ∂b = Σ_t g_t, ∂w_k = Σ_t g_t x_{t−K+1+k}, and in a second pass
    /// over the block's g, ∂x_s = Σ_k w_k g_{s+K−1−k}. SiLU'(p) = σ(p)(1 + p(1 − σ(p))).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Backward(Shape shape, BackwardPointers p, int first, int count, Vector512<float>* gradPre, float* lane)
    {
        var (tokens, inner, kernel) = (shape.Tokens, shape.Inner, shape.Kernel);
        var b = SelectiveScan.Load(p.Bias + first, count, lane);
        var gradBias = Vector512<float>.Zero;
        Span<Vector512<float>> gradTaps = stackalloc Vector512<float>[kernel];
        Span<Vector512<float>> taps = stackalloc Vector512<float>[kernel];
        for (var k = 0; k < kernel; k++)
        {
            taps[k] = SelectiveScan.Load(p.Taps + (long)k * inner + first, count, lane);
        }
        for (var s = 0; s < shape.Sequences; s++)
        {
            var rows = (long)s * tokens;
            for (var t = 0; t < tokens; t++)
            {
                var pre = b;
                var firstTap = Math.Max(0, kernel - 1 - t);
                for (var k = firstTap; k < kernel; k++)
                {
                    pre = Vector512.FusedMultiplyAdd(taps[k], SelectiveScan.Load(p.X + (rows + t - kernel + 1 + k) * inner + first, count, lane), pre);
                }
                var sigmoid = Vector512<float>.One / (Vector512<float>.One + FastExp.Exp(-pre));
                var g = SelectiveScan.Load(p.GradY + (rows + t) * inner + first, count, lane)
                    * sigmoid * (Vector512<float>.One + pre * (Vector512<float>.One - sigmoid));
                gradPre[t] = g;
                gradBias += g;
                for (var k = firstTap; k < kernel; k++)
                {
                    gradTaps[k] = Vector512.FusedMultiplyAdd(g, SelectiveScan.Load(p.X + (rows + t - kernel + 1 + k) * inner + first, count, lane), gradTaps[k]);
                }
            }
            for (var t = 0; t < tokens; t++)
            {
                var sum = Vector512<float>.Zero;
                for (var k = Math.Max(0, t + kernel - tokens); k < kernel; k++)
                {
                    sum = Vector512.FusedMultiplyAdd(taps[k], gradPre[t + kernel - 1 - k], sum);
                }
                SelectiveScan.Store(sum, p.GradX + (rows + t) * inner + first, count, lane);
            }
        }
        SelectiveScan.Store(gradBias, p.GradBias + first, count, lane);
        for (var k = 0; k < kernel; k++)
        {
            SelectiveScan.Store(gradTaps[k], p.GradTaps + (long)k * inner + first, count, lane);
        }
    }
}
