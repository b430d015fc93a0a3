using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Rotary position embedding without autograd, on the CPU: x·cos + rotate_half(x)·sin in one pass over the rows (q and
/// k, slices of the fused projection, are made contiguous first), where libtorch makes five passes and four temporaries
/// (a negation, a concatenation, two products and a sum; 4 ms of a 67 ms stage-1 teacher share, docs/conversion.md,
/// eighth round). It rounds where libtorch does, after each product and
/// after the sum (in bfloat16, to nearest even), and never fuses a product into the sum, so its results are libtorch's
/// bit for bit in float32 and bfloat16 (a test pins that).
/// </summary>
internal static unsafe class RotaryKernel
{
    /// <summary>Whether the kernel takes x [T, heads, headDim] with cos/sin [T, headDim]: no gradient, CPU, float32 or bfloat16, even headDim.</summary>
    public static bool Supports(Tensor x, Tensor cos, Tensor sin) =>
        Kernel.IsAccelerated && !x.requires_grad && x.device_type == DeviceType.CPU && x.dim() == 3 && x.shape[2] % 2 == 0
        && x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && cos.dtype == x.dtype && sin.dtype == x.dtype
        && cos.dim() == 2 && cos.shape[0] == x.shape[0] && cos.shape[1] == x.shape[2] && sin.shape.SequenceEqual(cos.shape);

    /// <summary>x [T, heads, headDim] rotated by the cos/sin rows of its tokens → a new contiguous tensor; rows split over <paramref name="threads"/>.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, KernelThreads threads)
    {
        x = x.contiguous();
        cos = cos.contiguous();
        sin = sin.contiguous();
        var output = empty_like(x);
        var (tokens, heads, dim) = ((int)x.shape[0], (int)x.shape[1], (int)x.shape[2]);
        var bf16 = x.dtype == ScalarType.BFloat16;
        byte* source = TensorMemory.Pointer<byte>(x), target = TensorMemory.Pointer<byte>(output);
        byte* c = TensorMemory.Pointer<byte>(cos), s = TensorMemory.Pointer<byte>(sin);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, tokens);
            for (var t = start; t < end; t++)
            {
                for (var h = 0; h < heads; h++)
                {
                    var row = ((long)t * heads + h) * dim;
                    if (bf16)
                    {
                        RowBf16((ushort*)source + row, (ushort*)target + row, (ushort*)c + (long)t * dim, (ushort*)s + (long)t * dim, dim / 2);
                    }
                    else
                    {
                        Row((float*)source + row, (float*)target + row, (float*)c + (long)t * dim, (float*)s + (long)t * dim, dim / 2);
                    }
                }
            }
        });
        GC.KeepAlive(x);
        GC.KeepAlive(cos);
        GC.KeepAlive(sin);
        return output;
    }

    /// <summary>out[i] = x[i]·cos[i] + (−x[i+half])·sin[i]; out[i+half] = x[i+half]·cos[i+half] + x[i]·sin[i+half].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(float* x, float* y, float* cos, float* sin, int half)
    {
        var i = 0;
        for (; i + 16 <= half; i += 16)
        {
            var (first, second) = (Vector512.Load(x + i), Vector512.Load(x + half + i));
            (first * Vector512.Load(cos + i) + -second * Vector512.Load(sin + i)).Store(y + i);
            (second * Vector512.Load(cos + half + i) + first * Vector512.Load(sin + half + i)).Store(y + half + i);
        }
        for (; i + 8 <= half; i += 8)
        {
            var (first, second) = (Vector256.Load(x + i), Vector256.Load(x + half + i));
            (first * Vector256.Load(cos + i) + -second * Vector256.Load(sin + i)).Store(y + i);
            (second * Vector256.Load(cos + half + i) + first * Vector256.Load(sin + half + i)).Store(y + half + i);
        }
        for (; i < half; i++)
        {
            var (first, second) = (x[i], x[half + i]);
            y[i] = first * cos[i] + -second * sin[i];
            y[half + i] = second * cos[half + i] + first * sin[half + i];
        }
    }

    /// <summary>As <see cref="Row"/> in bfloat16: each product and the sum rounded to bfloat16, as libtorch's operations round.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowBf16(ushort* x, ushort* y, ushort* cos, ushort* sin, int half)
    {
        var i = 0;
        for (; i + 16 <= half; i += 16)
        {
            var (first, second) = (Bf16.Load16(x + i), Bf16.Load16(x + half + i));
            Bf16.Store16(y + i, Bf16.Round(first * Bf16.Load16(cos + i)) + Bf16.Round(-second * Bf16.Load16(sin + i)));
            Bf16.Store16(y + half + i, Bf16.Round(second * Bf16.Load16(cos + half + i)) + Bf16.Round(first * Bf16.Load16(sin + half + i)));
        }
        for (; i + 8 <= half; i += 8) // the demo's 48-value heads: 24 = 16 + 8 (in the scalar loop, 2.5% of a stage-1 profile)
        {
            var (first, second) = (Bf16.Load8(x + i), Bf16.Load8(x + half + i));
            Bf16.Store8(y + i, Bf16.Round(first * Bf16.Load8(cos + i)) + Bf16.Round(-second * Bf16.Load8(sin + i)));
            Bf16.Store8(y + half + i, Bf16.Round(second * Bf16.Load8(cos + half + i)) + Bf16.Round(first * Bf16.Load8(sin + half + i)));
        }
        for (; i < half; i++)
        {
            var (first, second) = (Bf16.ToFloat(x[i]), Bf16.ToFloat(x[half + i]));
            y[i] = Bf16.FromFloat(Round(first * Bf16.ToFloat(cos[i])) + Round(-second * Bf16.ToFloat(sin[i])));
            y[half + i] = Bf16.FromFloat(Round(second * Bf16.ToFloat(cos[half + i])) + Round(first * Bf16.ToFloat(sin[half + i])));
        }
    }

    private static float Round(float value) => Bf16.ToFloat(Bf16.FromFloat(value));
}
