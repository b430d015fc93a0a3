using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// RMSNorm as one differentiable operation for training on the CPU, rows of float32 or bfloat16, computed as
/// HuggingFace computes it (<see cref="Layers.RmsNorm"/>): n = x · rsqrt(mean(x²) + ε) in float32, rounded to the
/// input's dtype, then y = weight · n. Why: libtorch's form is eight operations forward and about a dozen backward,
/// each a pass and an allocation over [T, hidden]; a stage-2 step runs 14 such norms forward and backward per worker
/// (docs/conversion.md, sixteenth round). Here each is one kernel forward and one backward, with the same roundings
/// (∂n = ∂y · weight rounded to the dtype, as libtorch's bfloat16 multiplication rounds it).
/// </summary>
public sealed unsafe class RmsNormFunction : SingleTensorFunction<RmsNormFunction>
{
    public override string Name => "RmsNorm";

    /// <summary>Whether the kernels run: x [T, hidden] and weight [hidden] of one dtype, float32 or bfloat16, on the CPU with 512-bit vectors.</summary>
    public static bool Supports(Tensor x, Tensor weight) =>
        Kernel.IsAccelerated && x.device_type == DeviceType.CPU && x.dim() == 2 && weight.dim() == 1 && weight.shape[0] == x.shape[1]
        && x.dtype == weight.dtype && x.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    public static Tensor Apply(Tensor x, Tensor weight, double eps) => apply(x, weight, (float)eps);

    /// <summary>
    /// The forward alone, with no autograd node: where no gradient is asked for (the teacher's forward in
    /// distillation, the engine's prefill), libtorch's form costs the same eight passes and allocations.
    /// </summary>
    public static Tensor Compute(Tensor x, Tensor weight, double eps)
    {
        var input = x.contiguous();
        var y = empty_like(input);
        Normalize(input, weight.contiguous(), y, (float)eps);
        return y;
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, weight, eps) = (((Tensor)vars[0]).contiguous(), ((Tensor)vars[1]).contiguous(), (float)vars[2]);
        var y = empty_like(x);
        ctx.save_for_backward([x, weight]);
        ctx.save_data("scales", Normalize(x, weight, y, eps));
        return y;
    }

    /// <summary>y = RMSNorm(x) row by row; returns each row's scale rsqrt(mean(x²) + ε) for the backward.</summary>
    private static float[] Normalize(Tensor x, Tensor weight, Tensor y, float eps)
    {
        var (rows, width) = ((int)x.shape[0], (int)x.shape[1]);
        var scales = new float[rows];
        // The tensors' memory resolved once: each lookup is a few calls into libtorch.
        var (bf16, rowBytes) = (x.dtype == ScalarType.BFloat16, (long)width * x.ElementSize);
        var xp = TensorMemory.Pointer<byte>(x);
        var wp = TensorMemory.Pointer<byte>(weight);
        var yp = TensorMemory.Pointer<byte>(y);
        for (var r = 0; r < rows; r++)
        {
            var offset = r * rowBytes;
            scales[r] = bf16
                ? Row((ushort*)(xp + offset), (ushort*)wp, (ushort*)(yp + offset), width, eps)
                : Row((float*)(xp + offset), (float*)wp, (float*)(yp + offset), width, eps);
        }
        return scales;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (x, weight) = (saved[0], saved[1]);
        var scales = (float[])ctx.get_data("scales");
        var (rows, width) = ((int)x.shape[0], (int)x.shape[1]);
        var dy = grad_output.to_type(x.dtype).contiguous();
        var dx = empty_like(x);
        var weightGradient = weight.requires_grad ? zeros(width) : null;
        var dw = weightGradient is null ? null : TensorMemory.Pointer<float>(weightGradient);
        var (bf16, rowBytes) = (x.dtype == ScalarType.BFloat16, (long)width * x.ElementSize);
        var xp = TensorMemory.Pointer<byte>(x);
        var wp = TensorMemory.Pointer<byte>(weight);
        var dyp = TensorMemory.Pointer<byte>(dy);
        var dxp = TensorMemory.Pointer<byte>(dx);
        for (var r = 0; r < rows; r++)
        {
            var offset = r * rowBytes;
            if (bf16)
            {
                GradientRow((ushort*)(xp + offset), (ushort*)wp, (ushort*)(dyp + offset), (ushort*)(dxp + offset), dw, width, scales[r]);
            }
            else
            {
                GradientRow((float*)(xp + offset), (float*)wp, (float*)(dyp + offset), (float*)(dxp + offset), dw, width, scales[r]);
            }
        }
        return [dx, weightGradient?.to_type(weight.dtype)!, null!];
    }

    /// <summary>One row of float32: y = w · x · s with s = rsqrt(mean(x²) + ε); returns s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Row(float* x, float* w, float* y, int n, float eps)
    {
        var scale = Scale(x, n, eps);
        var s = Vector512.Create(scale);
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            (Vector512.Load(w + i) * (Vector512.Load(x + i) * s)).Store(y + i);
        }
        for (; i < n; i++)
        {
            y[i] = w[i] * (x[i] * scale);
        }
        return scale;
    }

    /// <summary>One row of bfloat16: n = x · s rounded to bfloat16, y = w · n rounded; returns s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Row(ushort* x, ushort* w, ushort* y, int n, float eps)
    {
        var scale = Scale(x, n, eps);
        var s = Vector512.Create(scale);
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Bf16.Store16(y + i, Bf16.Load16(w + i) * Bf16.Round(Bf16.Load16(x + i) * s));
        }
        for (; i < n; i++)
        {
            y[i] = Bf16.FromFloat(Bf16.ToFloat(w[i]) * Bf16.ToFloat(Bf16.FromFloat(Bf16.ToFloat(x[i]) * scale)));
        }
        return scale;
    }

    /// <summary>∂x = s · ∂n − (s³ / n) · x · Σ ∂n·x, with ∂n = ∂y · w; ∂w += ∂y · x · s where asked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientRow(float* x, float* w, float* dy, float* dx, float* dw, int n, float scale)
    {
        var dots = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            dots += Vector512.Load(dy + i) * Vector512.Load(w + i) * Vector512.Load(x + i);
        }
        var dot = Vector512.Sum(dots);
        for (; i < n; i++)
        {
            dot += dy[i] * w[i] * x[i];
        }
        var (s, c) = (Vector512.Create(scale), Vector512.Create(scale * scale * scale * dot / n));
        for (i = 0; i + 16 <= n; i += 16)
        {
            var (xv, dyv) = (Vector512.Load(x + i), Vector512.Load(dy + i));
            (s * dyv * Vector512.Load(w + i) - c * xv).Store(dx + i);
            if (dw is not null)
            {
                (Vector512.Load(dw + i) + dyv * xv * s).Store(dw + i);
            }
        }
        for (; i < n; i++)
        {
            dx[i] = scale * dy[i] * w[i] - scale * scale * scale * dot / n * x[i];
            if (dw is not null)
            {
                dw[i] += dy[i] * x[i] * scale;
            }
        }
    }

    /// <summary>As the float32 row, with ∂n rounded to bfloat16 before it is used and ∂x rounded once at the end; ∂w in float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientRow(ushort* x, ushort* w, ushort* dy, ushort* dx, float* dw, int n, float scale)
    {
        var dots = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            dots += Bf16.Round(Bf16.Load16(dy + i) * Bf16.Load16(w + i)) * Bf16.Load16(x + i);
        }
        var dot = Vector512.Sum(dots);
        for (; i < n; i++)
        {
            dot += Bf16.ToFloat(Bf16.FromFloat(Bf16.ToFloat(dy[i]) * Bf16.ToFloat(w[i]))) * Bf16.ToFloat(x[i]);
        }
        var (s, c) = (Vector512.Create(scale), Vector512.Create(scale * scale * scale * dot / n));
        for (i = 0; i + 16 <= n; i += 16)
        {
            var (xv, dyv) = (Bf16.Load16(x + i), Bf16.Load16(dy + i));
            Bf16.Store16(dx + i, s * Bf16.Round(dyv * Bf16.Load16(w + i)) - c * xv);
            if (dw is not null)
            {
                (Vector512.Load(dw + i) + dyv * Bf16.Round(xv * s)).Store(dw + i);
            }
        }
        for (; i < n; i++)
        {
            var (xi, dyi) = (Bf16.ToFloat(x[i]), Bf16.ToFloat(dy[i]));
            dx[i] = Bf16.FromFloat(scale * Bf16.ToFloat(Bf16.FromFloat(dyi * Bf16.ToFloat(w[i]))) - scale * scale * scale * dot / n * xi);
            if (dw is not null)
            {
                dw[i] += dyi * Bf16.ToFloat(Bf16.FromFloat(xi * scale));
            }
        }
    }

    /// <summary>rsqrt(mean(x²) + ε) of a float32 row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Scale(float* x, int n, float eps)
    {
        var sums = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var v = Vector512.Load(x + i);
            sums += v * v;
        }
        var sum = Vector512.Sum(sums);
        for (; i < n; i++)
        {
            sum += x[i] * x[i];
        }
        return 1f / MathF.Sqrt(sum / n + eps);
    }

    /// <summary>rsqrt(mean(x²) + ε) of a bfloat16 row, in float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Scale(ushort* x, int n, float eps)
    {
        var sums = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var v = Bf16.Load16(x + i);
            sums += v * v;
        }
        var sum = Vector512.Sum(sums);
        for (; i < n; i++)
        {
            var v = Bf16.ToFloat(x[i]);
            sum += v * v;
        }
        return 1f / MathF.Sqrt(sum / n + eps);
    }
}
