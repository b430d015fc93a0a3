using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// silu(gate) · up of a feed-forward block's fused [gate | up] rows in one pass, for forwards that need no gradient
/// (prefill, evaluation, a distillation teacher). Why not libtorch's silu and mul: its exp (Sleef) hits a slow path,
/// tens of times slower, for arguments whose result over- or underflows, and on this VM the same silu over the
/// same values ran 0.14 ms in one process and 5.8 ms in another; a teacher's forward in stage 1 then took 107–113
/// instead of 67 ms, 13% of all samples in its exp (docs/conversion.md, seventh round). <see cref="FastExp"/> clamps
/// its argument, so no input takes a slow path; it also reads and writes the bfloat16 rows directly (one rounding,
/// where silu then mul rounded twice).
/// </summary>
internal static unsafe class SwiGluKernel
{
    /// <summary>Whether <paramref name="gateUp"/> can take this path: CPU, float32 or bfloat16, AVX-512, no gradient wanted.</summary>
    public static bool Supports(Tensor gateUp) =>
        Kernel.IsAccelerated && Avx512BW.IsSupported && gateUp.device_type == DeviceType.CPU && !gateUp.requires_grad
        && (gateUp.dtype is ScalarType.Float32 or ScalarType.BFloat16) && gateUp.dim() == 2;

    /// <summary>gateUp [T, 2 × intermediate] (gate | up) → silu(gate) · up [T, intermediate], same dtype; rows split over <paramref name="threads"/>.</summary>
    public static Tensor Apply(Tensor gateUp, int intermediate, KernelThreads threads)
    {
        using var scope = NewDisposeScope();
        var input = gateUp.contiguous();
        var rows = (int)input.shape[0];
        var output = empty(rows, intermediate, input.dtype);
        var bf16 = input.dtype == ScalarType.BFloat16;
        var source = (byte*)TensorMemory.Pointer<byte>(input);
        var target = (byte*)TensorMemory.Pointer<byte>(output);
        var size = bf16 ? 2 : 4;
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, rows);
            for (var r = start; r < end; r++)
            {
                var gate = source + (long)r * 2 * intermediate * size;
                var up = gate + (long)intermediate * size;
                var result = target + (long)r * intermediate * size;
                if (bf16)
                {
                    Row((ushort*)gate, (ushort*)up, (ushort*)result, intermediate);
                }
                else
                {
                    Row((float*)gate, (float*)up, (float*)result, intermediate);
                }
            }
        });
        return output.MoveToOuterDisposeScope();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(float* gate, float* up, float* result, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            (Silu(Vector512.Load(gate + i)) * Vector512.Load(up + i)).Store(result + i);
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
            Store16(result + i, Silu(Bf16.Load16(gate + i)) * Bf16.Load16(up + i));
        }
        for (; i < n; i++)
        {
            result[i] = Bf16.FromFloat(Kernel.Silu(Bf16.ToFloat(gate[i])) * Bf16.ToFloat(up[i]));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Silu(Vector512<float> x) => x / (Vector512<float>.One + FastExp.Exp(-x));

    /// <summary>16 floats rounded to nearest even bfloat16 (as <see cref="Bf16.FromFloat"/>; NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16(ushort* target, Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = bits + Vector512.Create(0x7FFFu) + (Vector512.ShiftRightLogical(bits, 16) & Vector512.Create(1u));
        var nan = Vector512.Equals(value, value).AsUInt32();   // all ones where not NaN
        var halves = Vector512.ConditionalSelect(nan, Vector512.ShiftRightLogical(rounded, 16), Vector512.Create(0x7FC0u));
        Avx512F.ConvertToVector256UInt16(halves).Store(target);
    }
}
