using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// y = W x (+ b) for a few input rows at once, over a weight's own memory: the small-batch path of a
/// <see cref="Layers.Linear"/>. At batch 1 libtorch streams weights at 13–18 GB/s; this loop keeps 8 independent
/// FMA chains per row block and reads bfloat16 weights 32 at a time, reaching the cache's bandwidth. A bfloat16
/// weight becomes float32 by a shift (even elements) or a mask (odd elements) of the 32-bit lane that holds two of
/// them, so the input is reordered once per call into [even | odd] halves of each 32-column block
/// (<see cref="PrepareInput"/>) and no per-weight shuffle is needed. Accumulation is float32.
/// </summary>
internal sealed unsafe class MatVec(Tensor weight, Tensor? bias)
{
    private const int Block = 32;
    private Bound? _bound;

    /// <summary>What the kernels read, resolved once: a parameter keeps its storage for its whole life (optimisers update in place).</summary>
    private sealed class Bound(bool supported, bool bf16, byte* weight, void* bias, bool biasBf16)
    {
        public readonly bool Supported = supported;
        public readonly bool Bf16 = bf16;
        public readonly byte* Weight = weight;
        public readonly void* Bias = bias;
        public readonly bool BiasBf16 = biasBf16;
    }

    private Bound Resolve() => _bound ??= Kernel.Supports(weight) && (bias is null || Kernel.Supports(bias))
        ? new Bound(true, weight.dtype == ScalarType.BFloat16, TensorMemory.Pointer<byte>(weight),
            bias is null ? null : TensorMemory.Pointer<byte>(bias), bias?.dtype == ScalarType.BFloat16)
        : new Bound(false, false, null, null, false);

    public int Rows { get; } = (int)weight.shape[0];
    public int Columns { get; } = (int)weight.shape[1];

    /// <summary>Whether the kernels can run on this weight (CPU, contiguous, float32 or bfloat16).</summary>
    public bool IsSupported => Resolve().Supported;

    /// <summary>bfloat16 weights read their input reordered (see the class comment).</summary>
    public bool WantsReorderedInput => Resolve().Bf16;

    /// <summary>
    /// Computes rows [<paramref name="start"/>, <paramref name="end"/>) of y for every input row: y[b × ldy + r]
    /// = W[r] · x[b] + bias[r], or y[b × ldy + r] += that with <paramref name="accumulate"/> (a residual connection).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Compute(in KernelInput x, float* y, int ldy, int start, int end, bool accumulate = false)
    {
        var bound = Resolve();
        if (x.Reordered != bound.Bf16 || x.Columns != Columns)
        {
            throw new ArgumentException("input prepared for another weight");
        }
        var sums = stackalloc float[16];
        for (var b = 0; b < x.Batch;)
        {
            var batch = x.Batch - b >= 4 ? 4 : x.Batch - b >= 2 ? 2 : 1;
            var input = x.Data + (long)b * x.Stride;
            var output = y + (long)b * ldy;
            var r = start;
            for (; r + 4 <= end; r += 4)
            {
                if (bound.Bf16)
                {
                    var block = (ushort*)bound.Weight + (long)r * Columns;
                    switch (batch)
                    {
                        case 4: Bf16Rows4Batch4(block, input, x.Stride, sums); break;
                        case 2: Bf16Rows4Batch2(block, input, x.Stride, sums); break;
                        default: Bf16Rows4Batch1(block, input, sums); break;
                    }
                }
                else
                {
                    for (var i = 0; i < batch; i++)
                    {
                        F32Rows4((float*)bound.Weight + (long)r * Columns, input + (long)i * x.Stride, sums + 4 * i);
                    }
                }
                for (var i = 0; i < batch; i++)
                {
                    for (var j = 0; j < 4; j++)
                    {
                        Store(bound, output + (long)i * ldy, r + j, sums[4 * i + j], accumulate);
                    }
                }
            }
            for (; r < end; r++)
            {
                for (var i = 0; i < batch; i++)
                {
                    var row = input + (long)i * x.Stride;
                    var sum = bound.Bf16
                        ? Bf16Row((ushort*)bound.Weight + (long)r * Columns, row)
                        : Kernel.Dot((float*)bound.Weight + (long)r * Columns, row, Columns);
                    Store(bound, output + (long)i * ldy, r, sum, accumulate);
                }
            }
            b += batch;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Bound bound, float* row, int r, float sum, bool accumulate)
    {
        if (bound.Bias is not null)
        {
            sum += bound.BiasBf16 ? Bf16.ToFloat(((ushort*)bound.Bias)[r]) : ((float*)bound.Bias)[r];
        }
        row[r] = accumulate ? row[r] + sum : sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Even(Vector512<uint> pairs) => Vector512.ShiftLeft(pairs, 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Odd(Vector512<uint> pairs) => (pairs & Vector512.Create(0xFFFF0000u)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Bf16Rows4Batch1(ushort* w, float* x, float* sums)
    {
        int n = Columns, full = n - n % Block;
        ushort* w0 = w, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n;
        Vector512<float> e0 = default, o0 = default, e1 = default, o1 = default, e2 = default, o2 = default, e3 = default, o3 = default;
        for (var k = 0; k < full; k += Block)
        {
            var xe = Vector512.Load(x + k);
            var xo = Vector512.Load(x + k + 16);
            var v0 = Vector512.Load((uint*)(w0 + k));
            var v1 = Vector512.Load((uint*)(w1 + k));
            var v2 = Vector512.Load((uint*)(w2 + k));
            var v3 = Vector512.Load((uint*)(w3 + k));
            e0 = Vector512.FusedMultiplyAdd(Even(v0), xe, e0);
            o0 = Vector512.FusedMultiplyAdd(Odd(v0), xo, o0);
            e1 = Vector512.FusedMultiplyAdd(Even(v1), xe, e1);
            o1 = Vector512.FusedMultiplyAdd(Odd(v1), xo, o1);
            e2 = Vector512.FusedMultiplyAdd(Even(v2), xe, e2);
            o2 = Vector512.FusedMultiplyAdd(Odd(v2), xo, o2);
            e3 = Vector512.FusedMultiplyAdd(Even(v3), xe, e3);
            o3 = Vector512.FusedMultiplyAdd(Odd(v3), xo, o3);
        }
        sums[0] = Vector512.Sum(e0 + o0) + Bf16Tail(w0, x, full, n);
        sums[1] = Vector512.Sum(e1 + o1) + Bf16Tail(w1, x, full, n);
        sums[2] = Vector512.Sum(e2 + o2) + Bf16Tail(w2, x, full, n);
        sums[3] = Vector512.Sum(e3 + o3) + Bf16Tail(w3, x, full, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Bf16Rows4Batch2(ushort* w, float* x, int ldx, float* sums)
    {
        int n = Columns, full = n - n % Block;
        ushort* w0 = w, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n;
        float* x1 = x + ldx;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (var k = 0; k < full; k += Block)
        {
            var xe = Vector512.Load(x + k);
            var xo = Vector512.Load(x + k + 16);
            var ye = Vector512.Load(x1 + k);
            var yo = Vector512.Load(x1 + k + 16);
            var v = Vector512.Load((uint*)(w0 + k));
            a0 = Vector512.FusedMultiplyAdd(Odd(v), xo, Vector512.FusedMultiplyAdd(Even(v), xe, a0));
            b0 = Vector512.FusedMultiplyAdd(Odd(v), yo, Vector512.FusedMultiplyAdd(Even(v), ye, b0));
            v = Vector512.Load((uint*)(w1 + k));
            a1 = Vector512.FusedMultiplyAdd(Odd(v), xo, Vector512.FusedMultiplyAdd(Even(v), xe, a1));
            b1 = Vector512.FusedMultiplyAdd(Odd(v), yo, Vector512.FusedMultiplyAdd(Even(v), ye, b1));
            v = Vector512.Load((uint*)(w2 + k));
            a2 = Vector512.FusedMultiplyAdd(Odd(v), xo, Vector512.FusedMultiplyAdd(Even(v), xe, a2));
            b2 = Vector512.FusedMultiplyAdd(Odd(v), yo, Vector512.FusedMultiplyAdd(Even(v), ye, b2));
            v = Vector512.Load((uint*)(w3 + k));
            a3 = Vector512.FusedMultiplyAdd(Odd(v), xo, Vector512.FusedMultiplyAdd(Even(v), xe, a3));
            b3 = Vector512.FusedMultiplyAdd(Odd(v), yo, Vector512.FusedMultiplyAdd(Even(v), ye, b3));
        }
        sums[0] = Vector512.Sum(a0) + Bf16Tail(w0, x, full, n);
        sums[1] = Vector512.Sum(a1) + Bf16Tail(w1, x, full, n);
        sums[2] = Vector512.Sum(a2) + Bf16Tail(w2, x, full, n);
        sums[3] = Vector512.Sum(a3) + Bf16Tail(w3, x, full, n);
        sums[4] = Vector512.Sum(b0) + Bf16Tail(w0, x1, full, n); // [input][row]
        sums[5] = Vector512.Sum(b1) + Bf16Tail(w1, x1, full, n);
        sums[6] = Vector512.Sum(b2) + Bf16Tail(w2, x1, full, n);
        sums[7] = Vector512.Sum(b3) + Bf16Tail(w3, x1, full, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Bf16Rows4Batch4(ushort* w, float* x, int ldx, float* sums)
    {
        int n = Columns, full = n - n % Block;
        float* x1 = x + ldx, x2 = x1 + ldx, x3 = x2 + ldx;
        // 4 rows × 4 inputs = 16 accumulators; one row's weights are converted once and used by all four inputs.
        for (var pair = 0; pair < 4; pair += 2)
        {
            ushort* w0 = w + (long)pair * n, w1 = w0 + n;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, c0 = default, c1 = default, c2 = default, c3 = default;
            for (var k = 0; k < full; k += Block)
            {
                var v = Vector512.Load((uint*)(w0 + k));
                var u = Vector512.Load((uint*)(w1 + k));
                Vector512<float> ve = Even(v), vo = Odd(v), ue = Even(u), uo = Odd(u);
                var xe = Vector512.Load(x + k);
                var xo = Vector512.Load(x + k + 16);
                a0 = Vector512.FusedMultiplyAdd(vo, xo, Vector512.FusedMultiplyAdd(ve, xe, a0));
                c0 = Vector512.FusedMultiplyAdd(uo, xo, Vector512.FusedMultiplyAdd(ue, xe, c0));
                xe = Vector512.Load(x1 + k);
                xo = Vector512.Load(x1 + k + 16);
                a1 = Vector512.FusedMultiplyAdd(vo, xo, Vector512.FusedMultiplyAdd(ve, xe, a1));
                c1 = Vector512.FusedMultiplyAdd(uo, xo, Vector512.FusedMultiplyAdd(ue, xe, c1));
                xe = Vector512.Load(x2 + k);
                xo = Vector512.Load(x2 + k + 16);
                a2 = Vector512.FusedMultiplyAdd(vo, xo, Vector512.FusedMultiplyAdd(ve, xe, a2));
                c2 = Vector512.FusedMultiplyAdd(uo, xo, Vector512.FusedMultiplyAdd(ue, xe, c2));
                xe = Vector512.Load(x3 + k);
                xo = Vector512.Load(x3 + k + 16);
                a3 = Vector512.FusedMultiplyAdd(vo, xo, Vector512.FusedMultiplyAdd(ve, xe, a3));
                c3 = Vector512.FusedMultiplyAdd(uo, xo, Vector512.FusedMultiplyAdd(ue, xe, c3));
            }
            // sums is [batch][4 rows]
            sums[0 * 4 + pair] = Vector512.Sum(a0) + Bf16Tail(w0, x, full, n);
            sums[1 * 4 + pair] = Vector512.Sum(a1) + Bf16Tail(w0, x1, full, n);
            sums[2 * 4 + pair] = Vector512.Sum(a2) + Bf16Tail(w0, x2, full, n);
            sums[3 * 4 + pair] = Vector512.Sum(a3) + Bf16Tail(w0, x3, full, n);
            sums[0 * 4 + pair + 1] = Vector512.Sum(c0) + Bf16Tail(w1, x, full, n);
            sums[1 * 4 + pair + 1] = Vector512.Sum(c1) + Bf16Tail(w1, x1, full, n);
            sums[2 * 4 + pair + 1] = Vector512.Sum(c2) + Bf16Tail(w1, x2, full, n);
            sums[3 * 4 + pair + 1] = Vector512.Sum(c3) + Bf16Tail(w1, x3, full, n);
        }
    }

    /// <summary>One row against one reordered input, with the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float Bf16Row(ushort* w, float* x)
    {
        int n = Columns, full = n - n % Block;
        Vector512<float> e = default, o = default;
        for (var k = 0; k < full; k += Block)
        {
            var v = Vector512.Load((uint*)(w + k));
            e = Vector512.FusedMultiplyAdd(Even(v), Vector512.Load(x + k), e);
            o = Vector512.FusedMultiplyAdd(Odd(v), Vector512.Load(x + k + 16), o);
        }
        return Vector512.Sum(e + o) + Bf16Tail(w, x, full, n);
    }

    /// <summary>Columns past the last whole 32-block: the input keeps its original order there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Bf16Tail(ushort* w, float* x, int from, int n)
    {
        var sum = 0f;
        for (var k = from; k < n; k++)
        {
            sum += Bf16.ToFloat(w[k]) * x[k];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void F32Rows4(float* w, float* x, float* sums)
    {
        int n = Columns, full = n - n % 16;
        float* w0 = w, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (var k = 0; k < full; k += 16)
        {
            var xv = Vector512.Load(x + k);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w0 + k), xv, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w1 + k), xv, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(w2 + k), xv, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(w3 + k), xv, a3);
        }
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (var k = full; k < n; k++)
        {
            t0 += w0[k] * x[k];
            t1 += w1[k] * x[k];
            t2 += w2[k] * x[k];
            t3 += w3[k] * x[k];
        }
        sums[0] = Vector512.Sum(a0) + t0;
        sums[1] = Vector512.Sum(a1) + t1;
        sums[2] = Vector512.Sum(a2) + t2;
        sums[3] = Vector512.Sum(a3) + t3;
    }

    /// <summary>
    /// The input as this weight reads it: for bfloat16 weights each whole 32-column block reordered to
    /// [x0, x2, …, x30, x1, x3, …, x31] in <paramref name="scratch"/> (batch × Columns floats); for float32 weights the
    /// input itself. Every thread prepares its own copy (a few hundred floats), so no barrier is needed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public KernelInput PrepareInput(float* x, int batch, int ldx, float* scratch)
    {
        if (!WantsReorderedInput)
        {
            return new KernelInput(x, batch, ldx, Columns, reordered: false);
        }
        int n = Columns, full = n - n % Block;
        for (var b = 0; b < batch; b++)
        {
            var source = x + (long)b * ldx;
            var target = scratch + (long)b * n;
            for (var k = 0; k < full; k += Block)
            {
                for (var i = 0; i < 16; i++)
                {
                    target[k + i] = source[k + 2 * i];
                    target[k + 16 + i] = source[k + 2 * i + 1];
                }
            }
            for (var k = full; k < n; k++)
            {
                target[k] = source[k];
            }
        }
        return new KernelInput(scratch, batch, n, Columns, reordered: true);
    }
}

/// <summary>Input rows of a <see cref="MatVec"/>: <c>Batch</c> rows of <c>Columns</c> floats, <c>Stride</c> apart.</summary>
internal readonly unsafe struct KernelInput(float* data, int batch, int stride, int columns, bool reordered)
{
    public readonly float* Data = data;
    public readonly int Batch = batch;
    public readonly int Stride = stride;
    public readonly int Columns = columns;
    public readonly bool Reordered = reordered;
}
