using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Decode attention of one KV group for one sequence: the group's query heads against every key the sequence may
/// see, read where the cache keeps them (<c>offsets</c>: element offset of each key's row in the K and V pools),
/// float32 or bfloat16. Two passes: scores and softmax, then the weighted sum of values. Each stored row is read
/// (and converted) once for all the group's heads; the heads' accumulators stay in vectors across the keys.
/// </summary>
internal static unsafe class AttentionKernel
{
    /// <param name="query">[heads, headDim], RoPE applied.</param>
    /// <param name="scores">[heads, count] scratch.</param>
    /// <param name="output">[heads] rows of headDim, <paramref name="outputStride"/> apart.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Attend(float* query, int heads, int headDim, Values keys, Values values, long* offsets, int count, float* scores, float* output, int outputStride)
    {
        if (headDim % 16 != 0 || !Kernel.IsAccelerated)
        {
            AttendAnyShape(query, heads, headDim, keys, values, offsets, count, scores, output, outputStride);
            return;
        }
        if (keys.Bf16)
        {
            Scores<Bf16Rows>(query, heads, headDim, keys.Data, offsets, count, scores);
        }
        else
        {
            Scores<F32Rows>(query, heads, headDim, keys.Data, offsets, count, scores);
        }
        for (var h = 0; h < heads; h++)
        {
            Kernel.Softmax(scores + h * count, count);
        }
        if (values.Bf16)
        {
            Mix<Bf16Rows>(heads, headDim, values.Data, offsets, count, scores, output, outputStride);
        }
        else
        {
            Mix<F32Rows>(heads, headDim, values.Data, offsets, count, scores, output, outputStride);
        }
    }

    /// <summary>How 16 stored values become float32 (specialised per pool dtype by the JIT).</summary>
    private interface IRows
    {
        static abstract Vector512<float> Load(byte* pool, long offset);
    }

    private readonly struct F32Rows : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* pool, long offset) => Vector512.Load((float*)pool + offset);
    }

    private readonly struct Bf16Rows : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* pool, long offset) => Bf16.Load16((ushort*)pool + offset);
    }

    /// <summary>
    /// Scores of every head against every key. Four keys at a time per head, in registers: four independent dot
    /// products keep the FMA units busy and their four horizontal sums overlap (a sum per key is the cost that
    /// dominates at head sizes of 48–128). A head re-reads the keys its group's other heads read, from L1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores<TRows>(float* query, int heads, int headDim, byte* keys, long* offsets, int count, float* scores) where TRows : IRows
    {
        var chunks = headDim / 16;
        var scale = 1f / MathF.Sqrt(headDim);
        for (var h = 0; h < heads; h++)
        {
            var q = query + h * headDim;
            var row = scores + h * count;
            var j = 0;
            for (; j + 4 <= count; j += 4)
            {
                var a0 = Vector512<float>.Zero;
                var a1 = Vector512<float>.Zero;
                var a2 = Vector512<float>.Zero;
                var a3 = Vector512<float>.Zero;
                long o0 = offsets[j], o1 = offsets[j + 1], o2 = offsets[j + 2], o3 = offsets[j + 3];
                for (var c = 0; c < chunks; c++)
                {
                    var qc = Vector512.Load(q + c * 16);
                    a0 = Vector512.FusedMultiplyAdd(qc, TRows.Load(keys, o0 + c * 16), a0);
                    a1 = Vector512.FusedMultiplyAdd(qc, TRows.Load(keys, o1 + c * 16), a1);
                    a2 = Vector512.FusedMultiplyAdd(qc, TRows.Load(keys, o2 + c * 16), a2);
                    a3 = Vector512.FusedMultiplyAdd(qc, TRows.Load(keys, o3 + c * 16), a3);
                }
                row[j] = Vector512.Sum(a0) * scale;
                row[j + 1] = Vector512.Sum(a1) * scale;
                row[j + 2] = Vector512.Sum(a2) * scale;
                row[j + 3] = Vector512.Sum(a3) * scale;
            }
            for (; j < count; j++)
            {
                var a = Vector512<float>.Zero;
                for (var c = 0; c < chunks; c++)
                {
                    a = Vector512.FusedMultiplyAdd(Vector512.Load(q + c * 16), TRows.Load(keys, offsets[j] + c * 16), a);
                }
                row[j] = Vector512.Sum(a) * scale;
            }
        }
    }

    /// <summary>
    /// The weighted sum of values, per head and 16-wide piece of the head: four keys at a time into four register
    /// accumulators (independent FMA chains), added at the end. Value rows are re-read per head and piece, from L1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Mix<TRows>(int heads, int headDim, byte* values, long* offsets, int count, float* probabilities, float* output, int outputStride) where TRows : IRows
    {
        var chunks = headDim / 16;
        for (var h = 0; h < heads; h++)
        {
            var p = probabilities + h * count;
            for (var c = 0; c < chunks; c++)
            {
                var a0 = Vector512<float>.Zero;
                var a1 = Vector512<float>.Zero;
                var a2 = Vector512<float>.Zero;
                var a3 = Vector512<float>.Zero;
                var j = 0;
                for (; j + 4 <= count; j += 4)
                {
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(p[j]), TRows.Load(values, offsets[j] + c * 16), a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(p[j + 1]), TRows.Load(values, offsets[j + 1] + c * 16), a1);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Create(p[j + 2]), TRows.Load(values, offsets[j + 2] + c * 16), a2);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Create(p[j + 3]), TRows.Load(values, offsets[j + 3] + c * 16), a3);
                }
                for (; j < count; j++)
                {
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(p[j]), TRows.Load(values, offsets[j] + c * 16), a0);
                }
                ((a0 + a1) + (a2 + a3)).Store(output + (long)h * outputStride + c * 16);
            }
        }
    }

    /// <summary>Head sizes that are not a multiple of 16 (the tiny test models): the same arithmetic, element by element.</summary>
    private static void AttendAnyShape(float* query, int heads, int headDim, Values keys, Values values, long* offsets, int count, float* scores, float* output, int outputStride)
    {
        var scale = 1f / MathF.Sqrt(headDim);
        for (var j = 0; j < count; j++)
        {
            for (var h = 0; h < heads; h++)
            {
                scores[h * count + j] = Kernel.Dot(query + h * headDim, keys, offsets[j], headDim) * scale;
            }
        }
        for (var h = 0; h < heads; h++)
        {
            Kernel.Softmax(scores + h * count, count);
            var target = output + (long)h * outputStride;
            new Span<float>(target, headDim).Clear();
            for (var j = 0; j < count; j++)
            {
                Kernel.AddScaled(target, scores[h * count + j], values, offsets[j], headDim);
            }
        }
    }
}
