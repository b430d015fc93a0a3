using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// silu(gate) · up of a feed-forward block's fused [gate | up] rows, forward and backward in one pass each, on the CPU.
/// Why not libtorch's silu and mul: its exp (Sleef) takes a slow path, tens of times slower, for arguments whose
/// result over- or underflows, and on this VM the same silu over the same values ran 0.14 ms in one process and 5.8
/// ms in another; the teacher's forward of a stage-1 step then took 107–113 instead of 65 ms, 13% of all samples in
/// that exp (docs/conversion.md, seventh round). <see cref="FastExp"/> clamps its argument, so no input takes a slow
/// path. The rows are read and written in their own dtype (float32 or bfloat16, rounded once to nearest even where
/// libtorch rounds after each operation), and a training forward's backward is two passes where libtorch's is four.
/// </summary>
public sealed unsafe class SwiGluFunction : SingleTensorFunction<SwiGluFunction>
{
    public override string Name => "SwiGlu";

    /// <summary>Whether <paramref name="gateUp"/> can take these kernels: [T, 2 × intermediate], float32 or bfloat16 on the CPU, AVX-512.</summary>
    public static bool Supports(Tensor gateUp) =>
        Kernel.IsAccelerated && Avx512BW.IsSupported && gateUp.device_type == DeviceType.CPU && gateUp.dim() == 2 && gateUp.shape[1] % 2 == 0
        && (gateUp.dtype is ScalarType.Float32 or ScalarType.BFloat16);

    /// <summary>gateUp [T, 2 × intermediate] (gate | up) → silu(gate) · up [T, intermediate], same dtype; rows split over <paramref name="threads"/>.</summary>
    public static Tensor Apply(Tensor gateUp, KernelThreads threads) => gateUp.requires_grad ? apply(gateUp, threads) : Compute(gateUp.contiguous(), threads);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var gateUp = ((Tensor)vars[0]).contiguous();
        var threads = (KernelThreads)vars[1];
        ctx.save_for_backward([gateUp]);
        ctx.save_data("threads", threads);
        return Compute(gateUp, threads);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var gateUp = ctx.get_saved_variables()[0];
        var threads = (KernelThreads)ctx.get_data("threads");
        var gradY = grad_output.to_type(gateUp.dtype).contiguous();
        var gradGateUp = empty_like(gateUp);
        var (rows, width) = ((int)gateUp.shape[0], (int)gateUp.shape[1] / 2);
        var bf16 = gateUp.dtype == ScalarType.BFloat16;
        var x = TensorMemory.Pointer<byte>(gateUp);
        var dy = TensorMemory.Pointer<byte>(gradY);
        var dx = TensorMemory.Pointer<byte>(gradGateUp);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, rows);
            for (var r = start; r < end; r++)
            {
                if (bf16)
                {
                    var row = (ushort*)x + (long)r * 2 * width;
                    var into = (ushort*)dx + (long)r * 2 * width;
                    GradientRow(row, row + width, (ushort*)dy + (long)r * width, into, into + width, width);
                }
                else
                {
                    var row = (float*)x + (long)r * 2 * width;
                    var into = (float*)dx + (long)r * 2 * width;
                    GradientRow(row, row + width, (float*)dy + (long)r * width, into, into + width, width);
                }
            }
        });
        return [gradGateUp, null!];
    }

    private static Tensor Compute(Tensor gateUp, KernelThreads threads)
    {
        var (rows, width) = ((int)gateUp.shape[0], (int)gateUp.shape[1] / 2);
        var output = empty(rows, width, gateUp.dtype);
        var bf16 = gateUp.dtype == ScalarType.BFloat16;
        var source = TensorMemory.Pointer<byte>(gateUp);
        var target = TensorMemory.Pointer<byte>(output);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, rows);
            for (var r = start; r < end; r++)
            {
                if (bf16)
                {
                    var gate = (ushort*)source + (long)r * 2 * width;
                    Row(gate, gate + width, (ushort*)target + (long)r * width, width);
                }
                else
                {
                    var gate = (float*)source + (long)r * 2 * width;
                    Row(gate, gate + width, (float*)target + (long)r * width, width);
                }
            }
        });
        return output;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(float* gate, float* up, float* result, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            (FastExp.Silu(Vector512.Load(gate + i)) * Vector512.Load(up + i)).Store(result + i);
        }
        for (; i < n; i++)
        {
            result[i] = Kernel.Silu(gate[i]) * up[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(ushort* gate, ushort* up, ushort* result, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Bf16.Store16(result + i, FastExp.Silu(Bf16.Load16(gate + i)) * Bf16.Load16(up + i));
        }
        for (; i < n; i++)
        {
            result[i] = Bf16.FromFloat(Kernel.Silu(Bf16.ToFloat(gate[i])) * Bf16.ToFloat(up[i]));
        }
    }

    /// <summary>∂gate = ∂y · up · σ(g)(1 + g(1 − σ(g))), ∂up = ∂y · silu(g).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientRow(float* gate, float* up, float* gradY, float* gradGate, float* gradUp, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var (g, u, dy) = (Vector512.Load(gate + i), Vector512.Load(up + i), Vector512.Load(gradY + i));
            var s = FastExp.Sigmoid(g);
            (dy * u * s * (Vector512<float>.One + g * (Vector512<float>.One - s))).Store(gradGate + i);
            (dy * g * s).Store(gradUp + i);
        }
        for (; i < n; i++)
        {
            var s = 1f / (1f + MathF.Exp(-gate[i]));
            gradGate[i] = gradY[i] * up[i] * s * (1 + gate[i] * (1 - s));
            gradUp[i] = gradY[i] * gate[i] * s;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientRow(ushort* gate, ushort* up, ushort* gradY, ushort* gradGate, ushort* gradUp, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var (g, u, dy) = (Bf16.Load16(gate + i), Bf16.Load16(up + i), Bf16.Load16(gradY + i));
            var s = FastExp.Sigmoid(g);
            Bf16.Store16(gradGate + i, dy * u * s * (Vector512<float>.One + g * (Vector512<float>.One - s)));
            Bf16.Store16(gradUp + i, dy * g * s);
        }
        for (; i < n; i++)
        {
            var (g, u, dy) = (Bf16.ToFloat(gate[i]), Bf16.ToFloat(up[i]), Bf16.ToFloat(gradY[i]));
            var s = 1f / (1f + MathF.Exp(-g));
            gradGate[i] = Bf16.FromFloat(dy * u * s * (1 + g * (1 - s)));
            gradUp[i] = Bf16.FromFloat(dy * g * s);
        }
    }
}
