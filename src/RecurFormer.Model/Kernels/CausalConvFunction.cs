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
/// passes: five passes over [tokens, channels] and a dozen allocations, where these kernels make one pass each way
/// (the pre-activation is recomputed, not stored), a row of tokens at a time, 16 channels per 512-bit vector, the
/// channels split across threads.
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
            Forward(shape, input, output, w, b, start, end, lane);
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
            var (start, end) = threads.Share(thread, shape.Inner, Lanes);
            // The last K rows of ∂L/∂(pre-activation) over this thread's channels (∂w and ∂b are summed straight into
            // their tensors: the threads' channels are disjoint).
            var width = end - start;
            var ring = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(1, shape.Kernel * width) * sizeof(float)), 64);
            try
            {
                Backward(shape, pointers, start, end, ring, lane);
            }
            finally
            {
                NativeMemory.AlignedFree(ring);
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

    /// <summary>
    /// Channels <paramref name="start"/>..<paramref name="end"/> of every token, a row at a time: the rows are read and
    /// written in memory order (a block of 16 channels walked down the tokens instead read 64 bytes of every 3 KB row
    /// of the demo's mixers, which made this pass and the backward's 5% of a stage-1 profile).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Forward(Shape shape, float* x, float* y, float* taps, float* bias, int start, int end, float* lane)
    {
        var (tokens, inner, kernel) = (shape.Tokens, shape.Inner, shape.Kernel);
        for (var s = 0; s < shape.Sequences; s++)
        {
            var rows = (long)s * tokens;
            for (var t = 0; t < tokens; t++)
            {
                var firstTap = Math.Max(0, kernel - 1 - t);
                var row = x + (rows + t - kernel + 1) * inner;                      // tap k reads row t − K + 1 + k
                var output = y + (rows + t) * inner;
                for (var first = start; first < end; first += Lanes)
                {
                    var count = Math.Min(Lanes, end - first);
                    var sum = SelectiveScan.Load(bias + first, count, lane);
                    for (var k = firstTap; k < kernel; k++)
                    {
                        sum = Vector512.FusedMultiplyAdd(SelectiveScan.Load(taps + (long)k * inner + first, count, lane),
                            SelectiveScan.Load(row + (long)k * inner + first, count, lane), sum);
                    }
                    SelectiveScan.Store(FastExp.Silu(sum), output + first, count, lane);
                }
            }
        }
    }

    /// <summary>
    /// With g_t = ∂L/∂y_t · SiLU'(p_t) (p recomputed): ∂b = Σ_t g_t, ∂w_k = Σ_t g_t x_{t−K+1+k} and ∂x_t = Σ_k w_k g_{t+K−1−k},
    /// for channels <paramref name="start"/>..<paramref name="end"/>, a row at a time (as <see cref="Forward"/>) and
    /// backwards in time, so that the K rows of g that ∂x_t needs (t and later) are made just before it, in
    /// <paramref name="ring"/> (row t at t mod K). SiLU'(p) = σ(p)(1 + p(1 − σ(p))). ∂w and ∂b are summed into
    /// p.GradTaps and p.GradBias, which start at zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Backward(Shape shape, BackwardPointers p, int start, int end, float* ring, float* lane)
    {
        var (tokens, inner, kernel) = (shape.Tokens, shape.Inner, shape.Kernel);
        var width = end - start;
        for (var s = 0; s < shape.Sequences; s++)
        {
            var rows = (long)s * tokens;
            for (var t = tokens - 1; t >= 0; t--)
            {
                var firstTap = Math.Max(0, kernel - 1 - t);
                var lastOutputTap = Math.Max(0, t + kernel - tokens);              // ∂x_t reads g_{t+K−1−k}, which exist for k ≥ this
                var row = p.X + (rows + t - kernel + 1) * inner;
                var gradY = p.GradY + (rows + t) * inner;
                var gradX = p.GradX + (rows + t) * inner;
                for (var first = start; first < end; first += Lanes)
                {
                    var count = Math.Min(Lanes, end - first);
                    var pre = SelectiveScan.Load(p.Bias + first, count, lane);
                    for (var k = firstTap; k < kernel; k++)
                    {
                        pre = Vector512.FusedMultiplyAdd(SelectiveScan.Load(p.Taps + (long)k * inner + first, count, lane),
                            SelectiveScan.Load(row + (long)k * inner + first, count, lane), pre);
                    }
                    var sigmoid = Vector512<float>.One / (Vector512<float>.One + FastExp.Exp(-pre));
                    var g = SelectiveScan.Load(gradY + first, count, lane) * sigmoid * (Vector512<float>.One + pre * (Vector512<float>.One - sigmoid));
                    SelectiveScan.Store(g, ring + (long)(t % kernel) * width + (first - start), count, lane);
                    SelectiveScan.Store(SelectiveScan.Load(p.GradBias + first, count, lane) + g, p.GradBias + first, count, lane);
                    var sum = Vector512<float>.Zero;
                    for (var k = 0; k < kernel; k++)
                    {
                        var taps = SelectiveScan.Load(p.Taps + (long)k * inner + first, count, lane);
                        if (k >= firstTap)
                        {
                            var gradTap = p.GradTaps + (long)k * inner + first;
                            SelectiveScan.Store(Vector512.FusedMultiplyAdd(g, SelectiveScan.Load(row + (long)k * inner + first, count, lane),
                                SelectiveScan.Load(gradTap, count, lane)), gradTap, count, lane);
                        }
                        if (k >= lastOutputTap)
                        {
                            var later = ring + (long)((t + kernel - 1 - k) % kernel) * width + (first - start);
                            sum = Vector512.FusedMultiplyAdd(taps, SelectiveScan.Load(later, count, lane), sum);
                        }
                    }
                    SelectiveScan.Store(sum, gradX + first, count, lane);
                }
            }
        }
    }
}
