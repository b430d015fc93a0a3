using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Causal grouped-query attention of one sequence from position 0, as one differentiable operation for training on
/// the CPU, computed in float32 whatever the inputs' dtype: over all earlier keys (full groups), or over the sinks and a
/// recent window (windowed groups, <see cref="WindowSpec"/>), whose scores are computed for the vectors of keys a query
/// sees only, so a windowed head's work does not grow with the sequence. Why not libtorch's scaled_dot_product_attention: on the
/// kept heads of a stage-2 step (128 tokens, head size 48, bfloat16) its flash path took 3.9 ms forward and backward
/// per layer of 8 heads and two sequences, where these loops take 2.7 ms, two thirds of that (docs/conversion.md, sixteenth
/// round). The forward keeps each query's log-sum-exp; the backward recomputes the probabilities from it, as flash
/// attention does. Keys and values are read transposed ([hd, n] per group) so that a query's scores for 16 keys
/// are 16 lanes of one vector: no horizontal sums in the inner loops.
/// </summary>
public sealed unsafe class CausalAttentionFunction : SingleTensorFunction<CausalAttentionFunction>
{
    private const int Lanes = 16;

    public override string Name => "CausalAttention";

    /// <summary>Whether the kernels run for these queries: [n, heads, hd], float32 or bfloat16, on the CPU with 512-bit vectors.</summary>
    public static bool Supports(Tensor query) =>
        Kernel.IsAccelerated && query.device_type == DeviceType.CPU && query.dim() == 3 && query.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>q [n, heads, hd], k and v [n, groups, hd] (query head h uses group h / (heads / groups)) → [n, heads, hd] in q's dtype.</summary>
    /// <param name="window">When given, query i sees the keys j ≤ i with j &lt; sinks or j > i − size; else every j ≤ i.</param>
    public static Tensor Apply(Tensor query, Tensor key, Tensor value, KernelThreads threads, WindowSpec? window = null)
    {
        if (!Supports(query) || key.dim() != 3 || !key.shape.SequenceEqual(value.shape) || key.shape[0] != query.shape[0]
            || key.shape[2] != query.shape[2] || query.shape[1] % key.shape[1] != 0)
        {
            throw new ArgumentException("causal attention takes q [n, heads, hd] and k, v [n, groups, hd] on the CPU");
        }
        if (window is { Size: < 1 } or { Sinks: < 0 })
        {
            throw new ArgumentException($"a window sees at least its query and no negative number of sinks, not {window}");
        }
        return apply(query, key, value, threads, window is null ? Visibility.Causal : new Visibility(window.Size, window.Sinks));
    }

    /// <summary>
    /// Which keys query i sees: j ≤ i with j &lt; <paramref name="Sinks"/> or j > i − <paramref name="Size"/>. The scores
    /// are computed in whole vectors of 16 keys over at most two runs: the sinks' vectors and the recent window's,
    /// one run from key 0 where they meet; the keys of those vectors that the query does not see score −∞.
    /// </summary>
    private readonly record struct Visibility(int Size, int Sinks)
    {
        /// <summary>Every key up to the query's own: a window longer than any sequence.</summary>
        public static readonly Visibility Causal = new(int.MaxValue, 0);

        /// <summary>The first key of query i's recent run; 0 where it reaches the sinks (one run).</summary>
        public int RecentStart(int i) => Math.Max(0, i - Size + 1) is var start && start <= Sinks ? 0 : start;

        /// <summary>Query i's runs of whole vectors: [0, sinkEnd) (empty for one run) and [recentFrom, end).</summary>
        public (int SinkEnd, int RecentFrom, int End) Runs(int i)
        {
            var end = Padded(i + 1);
            var start = RecentStart(i);
            var from = start / Lanes * Lanes;
            var sinkEnd = start == 0 ? 0 : Padded(Sinks);
            return from <= sinkEnd ? (0, 0, end) : (sinkEnd, from, end);
        }

        /// <summary>The last query that sees key j.</summary>
        public int LastQuery(int j, int tokens) => j < Sinks ? tokens - 1 : (int)Math.Min(tokens - 1, (long)j + Size - 1);

        /// <summary>−∞ at the keys of query i's runs that it does not see.</summary>
        public void Mask(float* scores, int i)
        {
            var (sinkEnd, from, end) = Runs(i);
            var start = RecentStart(i);
            for (var j = Sinks; j < sinkEnd; j++)
            {
                scores[j] = float.NegativeInfinity;
            }
            for (var j = Math.Max(from, Sinks); j < start; j++)
            {
                scores[j] = float.NegativeInfinity;
            }
            for (var j = i + 1; j < end; j++)
            {
                scores[j] = float.NegativeInfinity;
            }
        }

        private static int Padded(int count) => (count + Lanes - 1) / Lanes * Lanes;
    }

    /// <summary>The shapes of one call: n tokens, heads, groups, head size, 1/√hd, and n rounded up to whole vectors.</summary>
    private readonly record struct Shape(int Tokens, int Heads, int Groups, int HeadDim)
    {
        public int GroupSize { get; } = Heads / Groups;
        public float Scale { get; } = 1f / MathF.Sqrt(HeadDim);
        public int Padded { get; } = (Tokens + Lanes - 1) / Lanes * Lanes;
        public static Shape Of(Tensor q, Tensor k) => new((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2]);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var dtype = ((Tensor)vars[0]).dtype;
        var (q, k, v) = (Float32((Tensor)vars[0]), Float32((Tensor)vars[1]), Float32((Tensor)vars[2]));
        var threads = (KernelThreads)vars[3];
        var visibility = (Visibility)vars[4];
        var shape = Shape.Of(q, k);
        var output = zeros(q.shape);
        var logSumExps = new float[shape.Heads * shape.Tokens];
        var qp = TensorMemory.Pointer<float>(q);
        var kp = TensorMemory.Pointer<float>(k);
        var vp = TensorMemory.Pointer<float>(v);
        var op = TensorMemory.Pointer<float>(output);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, shape.Groups);
            if (start == end)
            {
                return;
            }
            var scratch = (float*)NativeMemory.AlignedAlloc((nuint)(sizeof(float) * (shape.HeadDim * shape.Padded + shape.Padded)), 64);
            try
            {
                for (var g = start; g < end; g++)
                {
                    ForwardGroup(qp, kp, vp, op, logSumExps, shape, visibility, g, scratch);
                }
            }
            finally
            {
                NativeMemory.AlignedFree(scratch);
            }
        });
        ctx.save_for_backward([q, k, v, output]);
        ctx.save_data("lse", logSumExps);
        ctx.save_data("threads", threads);
        ctx.save_data("visibility", visibility);
        return output.to_type(dtype);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (q, k, v, output) = (saved[0], saved[1], saved[2], saved[3]);
        var logSumExps = (float[])ctx.get_data("lse");
        var threads = (KernelThreads)ctx.get_data("threads");
        var visibility = (Visibility)ctx.get_data("visibility");
        var dtype = grad_output.dtype;
        var shape = Shape.Of(q, k);
        var gradOutput = Float32(grad_output);
        var (dq, dk, dv) = (zeros(q.shape), zeros(k.shape), zeros(v.shape));
        var buffers = new Buffers(TensorMemory.Pointer<float>(q), TensorMemory.Pointer<float>(k), TensorMemory.Pointer<float>(v),
            TensorMemory.Pointer<float>(output), TensorMemory.Pointer<float>(gradOutput),
            TensorMemory.Pointer<float>(dq), TensorMemory.Pointer<float>(dk), TensorMemory.Pointer<float>(dv));
        threads.Run(thread =>
        {
            // By group: a group's ∂k and ∂v rows are written by its own thread only.
            var (start, end) = threads.Share(thread, shape.Groups);
            if (start == end)
            {
                return;
            }
            var scratch = (float*)NativeMemory.AlignedAlloc((nuint)(sizeof(float) * ((2L * shape.HeadDim + 2L * shape.Tokens + 1) * shape.Padded)), 64);
            try
            {
                for (var g = start; g < end; g++)
                {
                    BackwardGroup(buffers, logSumExps, shape, visibility, g, scratch);
                }
            }
            finally
            {
                NativeMemory.AlignedFree(scratch);
            }
        });
        return [dq.to_type(dtype), dk.to_type(dtype), dv.to_type(dtype), null!, null!];
    }

    private static Tensor Float32(Tensor t) => t.detach().to_type(ScalarType.Float32).contiguous();

    /// <summary>Group g's [hd, padded] transpose of k or v rows (zeros past the last token) into <paramref name="into"/>.</summary>
    private static void Transpose(float* rows, Shape shape, int g, float* into)
    {
        new Span<float>(into, shape.HeadDim * shape.Padded).Clear();
        for (var j = 0; j < shape.Tokens; j++)
        {
            var row = rows + ((long)j * shape.Groups + g) * shape.HeadDim;
            for (var d = 0; d < shape.HeadDim; d++)
            {
                into[(long)d * shape.Padded + j] = row[d];
            }
        }
    }

    /// <summary>Scores of query row <paramref name="query"/> against keys 0..count-1 (whole vectors of them), times 1/√hd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores(float* query, float* transposed, Shape shape, int count, float* scores)
    {
        var (scale, padded, hd) = (Vector512.Create(shape.Scale), shape.Padded, shape.HeadDim);
        for (var j = 0; j < count; j += Lanes)
        {
            // Four sums over d in turn: one would wait on each FMA's latency.
            var (s0, s1, s2, s3) = (Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero);
            var column = transposed + j;
            var d = 0;
            for (; d + 4 <= hd; d += 4, column += 4 * padded)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Create(query[d]), Vector512.Load(column), s0);
                s1 = Vector512.FusedMultiplyAdd(Vector512.Create(query[d + 1]), Vector512.Load(column + padded), s1);
                s2 = Vector512.FusedMultiplyAdd(Vector512.Create(query[d + 2]), Vector512.Load(column + 2 * padded), s2);
                s3 = Vector512.FusedMultiplyAdd(Vector512.Create(query[d + 3]), Vector512.Load(column + 3 * padded), s3);
            }
            for (; d < hd; d++, column += padded)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Create(query[d]), Vector512.Load(column), s0);
            }
            ((s0 + s1 + (s2 + s3)) * scale).Store(scores + j);
        }
    }

    /// <summary>
    /// into = factor · Σ_j weights[j] · rows[j] over <paramref name="count"/> rows <paramref name="stride"/> floats apart,
    /// hd values each: in registers for head sizes of whole vectors up to 64 (no store and reload per row), else row by row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WeightedSum(float* weights, float* rows, long stride, int count, float factor, float* into, int hd)
    {
        if (hd % Lanes == 0 && hd <= 4 * Lanes)
        {
            // Even and odd rows into their own sums: one set would wait on each FMA's latency.
            var (a0, a1, a2, a3) = (Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero);
            var (b0, b1, b2, b3) = (Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero);
            var vectors = hd / Lanes;
            var j = 0;
            for (; j + 2 <= count; j += 2, rows += 2 * stride)
            {
                var (w, x) = (Vector512.Create(weights[j]), Vector512.Create(weights[j + 1]));
                var next = rows + stride;
                a0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows), a0);
                b0 = Vector512.FusedMultiplyAdd(x, Vector512.Load(next), b0);
                if (vectors > 1) { a1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + Lanes), a1); b1 = Vector512.FusedMultiplyAdd(x, Vector512.Load(next + Lanes), b1); }
                if (vectors > 2) { a2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + 2 * Lanes), a2); b2 = Vector512.FusedMultiplyAdd(x, Vector512.Load(next + 2 * Lanes), b2); }
                if (vectors > 3) { a3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + 3 * Lanes), a3); b3 = Vector512.FusedMultiplyAdd(x, Vector512.Load(next + 3 * Lanes), b3); }
            }
            if (j < count)
            {
                var w = Vector512.Create(weights[j]);
                a0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows), a0);
                if (vectors > 1) a1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + Lanes), a1);
                if (vectors > 2) a2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + 2 * Lanes), a2);
                if (vectors > 3) a3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(rows + 3 * Lanes), a3);
            }
            (a0, a1, a2, a3) = (a0 + b0, a1 + b1, a2 + b2, a3 + b3);
            var f = Vector512.Create(factor);
            (Vector512.Load(into) + a0 * f).Store(into);
            if (vectors > 1) (Vector512.Load(into + Lanes) + a1 * f).Store(into + Lanes);
            if (vectors > 2) (Vector512.Load(into + 2 * Lanes) + a2 * f).Store(into + 2 * Lanes);
            if (vectors > 3) (Vector512.Load(into + 3 * Lanes) + a3 * f).Store(into + 3 * Lanes);
            return;
        }
        for (var j = 0; j < count; j++, rows += stride)
        {
            Kernel.AddScaled(into, weights[j] * factor, rows, hd);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardGroup(float* q, float* k, float* v, float* o, float[] logSumExps, Shape shape, Visibility visibility, int g, float* scratch)
    {
        var keysT = scratch;
        var scores = scratch + (long)shape.HeadDim * shape.Padded;
        var rowStride = (long)shape.Groups * shape.HeadDim;
        Transpose(k, shape, g, keysT);
        for (var h = g * shape.GroupSize; h < (g + 1) * shape.GroupSize; h++)
        {
            for (var i = 0; i < shape.Tokens; i++)
            {
                var query = q + ((long)i * shape.Heads + h) * shape.HeadDim;
                var (sinkEnd, from, end) = visibility.Runs(i);
                Scores(query, keysT, shape, sinkEnd, scores);
                Scores(query, keysT + from, shape, end - from, scores + from);
                visibility.Mask(scores, i);
                var max = MathF.Max(Kernel.Max(scores, sinkEnd), Kernel.Max(scores + from, end - from));
                var (m, sums) = (Vector512.Create(max), Vector512<float>.Zero);
                for (var j = sinkEnd > 0 ? 0 : from; j < end; j = j + Lanes == sinkEnd ? from : j + Lanes) // the sinks' vectors, then the recent run's
                {
                    var e = FastExp.Exp(Vector512.Load(scores + j) - m);     // −∞ at the keys it does not see: 0
                    e.Store(scores + j);
                    sums += e;
                }
                var sum = Vector512.Sum(sums);
                var row = o + ((long)i * shape.Heads + h) * shape.HeadDim;
                var values = v + (long)g * shape.HeadDim;
                WeightedSum(scores, values, rowStride, sinkEnd, 1f / sum, row, shape.HeadDim);
                WeightedSum(scores + from, values + from * rowStride, rowStride, i + 1 - from, 1f / sum, row, shape.HeadDim);
                logSumExps[h * shape.Tokens + i] = max + MathF.Log(sum);
            }
        }
    }

    /// <summary>The tensors of a backward pass (float32, contiguous).</summary>
    private readonly struct Buffers(float* q, float* k, float* v, float* o, float* dO, float* dq, float* dk, float* dv)
    {
        public readonly float* Q = q, K = k, V = v, O = o, DO = dO, DQ = dq, DK = dk, DV = dv;
    }

    /// <summary>
    /// With p_ij = exp(s_ij − lse_i), D_i = ∂o_i·o_i and ∂s_ij = (1/√hd) p_ij (∂o_i·v_j − D_i): ∂q_i = Σ_j ∂s_ij k_j by
    /// query, then ∂k_j += Σ_i ∂s_ij q_i and ∂v_j += Σ_i p_ij ∂o_i by key, for each of the group's heads (sums in
    /// registers both ways: the [tokens, tokens] p and ∂s of a head are kept in between).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardGroup(Buffers b, float[] logSumExps, Shape shape, Visibility visibility, int g, float* scratch)
    {
        var (hd, padded, tokens) = (shape.HeadDim, shape.Padded, shape.Tokens);
        var keysT = scratch;
        var valuesT = keysT + (long)hd * padded;
        var probabilities = valuesT + (long)hd * padded;          // [tokens, padded]: row i, the keys of its runs
        var gradScores = probabilities + (long)tokens * padded;    // [tokens, padded]
        var column = gradScores + (long)tokens * padded;           // [padded]
        Transpose(b.K, shape, g, keysT);
        Transpose(b.V, shape, g, valuesT);
        var rowStride = (long)shape.Heads * hd;
        var keyStride = (long)shape.Groups * hd;
        for (var h = g * shape.GroupSize; h < (g + 1) * shape.GroupSize; h++)
        {
            // By query: the probabilities and ∂s of each row, and ∂q.
            for (var i = 0; i < tokens; i++)
            {
                var offset = i * rowStride + (long)h * hd;
                var p = probabilities + (long)i * padded;
                var gradScore = gradScores + (long)i * padded;
                var (sinkEnd, from, end) = visibility.Runs(i);
                Scores(b.Q + offset, keysT, shape, sinkEnd, p);
                Scores(b.Q + offset, keysT + from, shape, end - from, p + from);
                Scores(b.DO + offset, valuesT, shape, sinkEnd, gradScore);                  // (1/√hd) ∂o·v_j
                Scores(b.DO + offset, valuesT + from, shape, end - from, gradScore + from);
                visibility.Mask(p, i);
                var dot = Kernel.Dot(b.DO + offset, b.O + offset, hd);
                var (l, d0) = (Vector512.Create(logSumExps[h * tokens + i]), Vector512.Create(dot * shape.Scale));
                for (var j = sinkEnd > 0 ? 0 : from; j < end; j = j + Lanes == sinkEnd ? from : j + Lanes)
                {
                    var probability = FastExp.Exp(Vector512.Load(p + j) - l);
                    probability.Store(p + j);
                    (probability * (Vector512.Load(gradScore + j) - d0)).Store(gradScore + j);
                }
                var keys = b.K + (long)g * hd;
                WeightedSum(gradScore, keys, keyStride, sinkEnd, 1f, b.DQ + offset, hd);
                WeightedSum(gradScore + from, keys + from * keyStride, keyStride, i + 1 - from, 1f, b.DQ + offset, hd);
            }
            // By key: ∂k_j and ∂v_j over the queries i ≥ j that see it, the column j of each matrix gathered first.
            for (var j = 0; j < tokens; j++)
            {
                var keyRow = ((long)j * shape.Groups + g) * hd;
                var last = visibility.LastQuery(j, tokens);
                var seen = last - j + 1;
                for (var i = j; i <= last; i++)
                {
                    column[i - j] = gradScores[(long)i * padded + j];
                }
                WeightedSum(column, b.Q + j * rowStride + (long)h * hd, rowStride, seen, 1f, b.DK + keyRow, hd);
                for (var i = j; i <= last; i++)
                {
                    column[i - j] = probabilities[(long)i * padded + j];
                }
                WeightedSum(column, b.DO + j * rowStride + (long)h * hd, rowStride, seen, 1f, b.DV + keyRow, hd);
            }
        }
    }
}
