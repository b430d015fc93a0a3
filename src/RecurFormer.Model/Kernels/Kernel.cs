using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Small vector routines of the CPU kernels, over float32 activations and float32 or bfloat16 stored values
/// (<see cref="Values"/>). All are single-threaded; <see cref="KernelThreads"/> splits the work around them.
/// Hot loops here and in the layers' kernel paths are compiled fully optimised on first call
/// (<c>AggressiveOptimization</c>): with tiered compilation a decode step ran its loops unoptimised for hundreds of
/// steps, at a third of the speed.
/// </summary>
internal static unsafe class Kernel
{
    /// <summary>Whether 512-bit vectors run in hardware here; without it the kernels would be slower than libtorch.</summary>
    public static bool IsAccelerated => Vector512.IsHardwareAccelerated;

    /// <summary>A tensor the kernels can read: contiguous, on the CPU, float32 or bfloat16.</summary>
    public static bool Supports(Tensor tensor) =>
        tensor.device_type == DeviceType.CPU && tensor.is_contiguous() && tensor.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    public static Values ValuesOf(Tensor tensor) => Supports(tensor)
        ? new Values(TensorMemory.Pointer<byte>(tensor), tensor.dtype == ScalarType.BFloat16)
        : throw new ArgumentException("kernels read contiguous float32 or bfloat16 CPU tensors");

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(float* a, float* b, int n)
    {
        var acc = Vector512<float>.Zero;
        var k = 0;
        for (; k + 16 <= n; k += 16)
        {
            acc = Vector512.FusedMultiplyAdd(Vector512.Load(a + k), Vector512.Load(b + k), acc);
        }
        var sum = Vector512.Sum(acc);
        for (; k < n; k++)
        {
            sum += a[k] * b[k];
        }
        return sum;
    }

    /// <summary>q · k with k stored as float32 or bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* q, Values k, long offset, int n)
    {
        if (!k.Bf16)
        {
            return Dot(q, (float*)k.Data + offset, n);
        }
        var source = (ushort*)k.Data + offset;
        var acc = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), Bf16.Load16(source + i), acc);
        }
        var sum = Vector512.Sum(acc);
        for (; i < n; i++)
        {
            sum += q[i] * Bf16.ToFloat(source[i]);
        }
        return sum;
    }

    /// <summary>y += a · v with v stored as float32 or bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddScaled(float* y, float a, Values v, long offset, int n)
    {
        var scale = Vector512.Create(a);
        var i = 0;
        if (v.Bf16)
        {
            var source = (ushort*)v.Data + offset;
            for (; i + 16 <= n; i += 16)
            {
                Vector512.FusedMultiplyAdd(Bf16.Load16(source + i), scale, Vector512.Load(y + i)).Store(y + i);
            }
            for (; i < n; i++)
            {
                y[i] += a * Bf16.ToFloat(source[i]);
            }
            return;
        }
        var values = (float*)v.Data + offset;
        for (; i + 16 <= n; i += 16)
        {
            Vector512.FusedMultiplyAdd(Vector512.Load(values + i), scale, Vector512.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++)
        {
            y[i] += a * values[i];
        }
    }

    /// <summary>y += a · x, float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddScaled(float* y, float a, float* x, int n)
    {
        var scale = Vector512.Create(a);
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Vector512.FusedMultiplyAdd(Vector512.Load(x + i), scale, Vector512.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++)
        {
            y[i] += a * x[i];
        }
    }

    /// <summary>Stores n floats as float32 or bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Store(float* x, Values target, long offset, int n)
    {
        if (target.Bf16)
        {
            var destination = (ushort*)target.Data + offset;
            for (var i = 0; i < n; i++)
            {
                destination[i] = Bf16.FromFloat(x[i]);
            }
            return;
        }
        new ReadOnlySpan<float>(x, n).CopyTo(new Span<float>((float*)target.Data + offset, n));
    }

    /// <summary>n stored values as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Load(Values source, long offset, float* x, int n)
    {
        if (source.Bf16)
        {
            Bf16.ToFloat((ushort*)source.Data + offset, x, n);
            return;
        }
        new ReadOnlySpan<float>((float*)source.Data + offset, n).CopyTo(new Span<float>(x, n));
    }

    /// <summary>RMSNorm as HuggingFace computes it in float32: y = w · x / √(mean(x²) + ε).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, Values weight, float* y, int n, float eps)
    {
        var acc = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var v = Vector512.Load(x + i);
            acc = Vector512.FusedMultiplyAdd(v, v, acc);
        }
        var squares = Vector512.Sum(acc);
        for (; i < n; i++)
        {
            squares += x[i] * x[i];
        }
        var inverse = 1f / MathF.Sqrt(squares / n + eps);
        for (i = 0; i < n; i++)
        {
            y[i] = x[i] * inverse * weight[i];
        }
    }

    /// <summary>x ← silu(x) · y (SwiGLU), x and y of n floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluMultiply(float* x, float* y, int n)
    {
        var i = 0;
        var one = Vector512<float>.One;
        for (; i + 16 <= n; i += 16)
        {
            var v = Vector512.Load(x + i);
            (v / (one + FastExp.Exp(-v)) * Vector512.Load(y + i)).Store(x + i);
        }
        for (; i < n; i++)
        {
            x[i] = Silu(x[i]) * y[i];
        }
    }

    /// <summary>
    /// One Mamba state update of one channel: h ← exp(−Δ·e^{logA}) ⊙ h + drive · B, returning h · C (n state
    /// entries; 16 at a time).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float StateStep(float* h, float* logA, float* b, float* c, float delta, float drive, int n)
    {
        var i = 0;
        var sum = 0f;
        if (n >= 16)
        {
            var acc = Vector512<float>.Zero;
            var minusDelta = Vector512.Create(-delta);
            var driveVector = Vector512.Create(drive);
            for (; i + 16 <= n; i += 16)
            {
                var decay = FastExp.Exp(minusDelta * FastExp.Exp(Vector512.Load(logA + i)));
                var next = Vector512.FusedMultiplyAdd(decay, Vector512.Load(h + i), driveVector * Vector512.Load(b + i));
                next.Store(h + i);
                acc = Vector512.FusedMultiplyAdd(next, Vector512.Load(c + i), acc);
            }
            sum = Vector512.Sum(acc);
        }
        for (; i < n; i++)
        {
            h[i] = MathF.Exp(-delta * MathF.Exp(logA[i])) * h[i] + drive * b[i];
            sum += h[i] * c[i];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Silu(float x) => x / (1f + MathF.Exp(-x));

    /// <summary>softplus as torch computes it (linear above 20).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Softplus(float x) => x > 20f ? x : MathF.Log(1f + MathF.Exp(x));

    /// <summary>The largest of n values (−∞ for none).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Max(float* values, int n)
    {
        var max = float.NegativeInfinity;
        var i = 0;
        if (n >= 16)
        {
            var maxima = Vector512.Load(values);
            for (i = 16; i + 16 <= n; i += 16)
            {
                maxima = Vector512.Max(maxima, Vector512.Load(values + i));
            }
            for (var lane = 0; lane < 16; lane++)
            {
                max = MathF.Max(max, maxima[lane]);
            }
        }
        for (; i < n; i++)
        {
            max = MathF.Max(max, values[i]);
        }
        return max;
    }

    /// <summary>In-place softmax of n scores: the scores become probabilities.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Softmax(float* scores, int n)
    {
        var max = Max(scores, n);
        var sum = 0f;
        var k = 0;
        var maxVector = Vector512.Create(max);
        var sumVector = Vector512<float>.Zero;
        for (; k + 16 <= n; k += 16)
        {
            var e = FastExp.Exp(Vector512.Load(scores + k) - maxVector);
            e.Store(scores + k);
            sumVector += e;
        }
        sum = Vector512.Sum(sumVector);
        for (; k < n; k++)
        {
            scores[k] = MathF.Exp(scores[k] - max);
            sum += scores[k];
        }
        var inverse = 1f / sum;
        var factor = Vector512.Create(inverse);
        for (k = 0; k + 16 <= n; k += 16)
        {
            (Vector512.Load(scores + k) * factor).Store(scores + k);
        }
        for (; k < n; k++)
        {
            scores[k] *= inverse;
        }
    }

    /// <summary>
    /// RoPE, "rotate half" layout as HuggingFace: for i &lt; d/2, (x_i, x_{i+d/2}) rotated by the angle of frequency i at
    /// this position; <paramref name="cos"/> and <paramref name="sin"/> hold the d/2 values for the position.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rope(float* x, float* cos, float* sin, int headDim)
    {
        var half = headDim / 2;
        for (var i = 0; i < half; i++)
        {
            float a = x[i], b = x[i + half];
            x[i] = a * cos[i] - b * sin[i];
            x[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

/// <summary>Stored values the kernels read or write: float32, or bfloat16 when <see cref="Bf16"/>.</summary>
internal readonly unsafe struct Values(byte* data, bool bf16)
{
    public readonly byte* Data = data;
    public readonly bool Bf16 = bf16;

    public float this[long i] => Bf16 ? Kernels.Bf16.ToFloat(((ushort*)Data)[i]) : ((float*)Data)[i];

    /// <summary>n values at <paramref name="offset"/> as float32: in place for float32, converted into <paramref name="buffer"/> for bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float* Row(long offset, int n, float* buffer)
    {
        if (!Bf16)
        {
            return (float*)Data + offset;
        }
        Kernels.Bf16.ToFloat((ushort*)Data + offset, buffer, n);
        return buffer;
    }

    /// <summary>n values at <paramref name="offset"/> copied (converted) into <paramref name="target"/> as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(long offset, int n, float* target) => Kernel.Load(this, offset, target, n);

    /// <summary>The same values from <paramref name="elements"/> further on.</summary>
    public Values Skip(long elements) => new(Data + elements * (Bf16 ? 2 : 4), Bf16);
}
