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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores<TRows>(float* query, int heads, int headDim, byte* keys, long* offsets, int count, float* scores) where TRows : IRows
    {
        var chunks = headDim / 16;
        var scale = 1f / MathF.Sqrt(headDim);
        var q = stackalloc Vector512<float>[heads * chunks];
        var acc = stackalloc Vector512<float>[heads];
        for (var i = 0; i < heads * chunks; i++)
        {
            q[i] = Vector512.Load(query + i * 16);
        }
        for (var j = 0; j < count; j++)
        {
            for (var h = 0; h < heads; h++)
            {
                acc[h] = Vector512<float>.Zero;
            }
            for (var c = 0; c < chunks; c++)
            {
                var k = TRows.Load(keys, offsets[j] + c * 16);
                for (var h = 0; h < heads; h++)
                {
                    acc[h] = Vector512.FusedMultiplyAdd(q[h * chunks + c], k, acc[h]);
                }
            }
            for (var h = 0; h < heads; h++)
            {
                scores[h * count + j] = Vector512.Sum(acc[h]) * scale;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Mix<TRows>(int heads, int headDim, byte* values, long* offsets, int count, float* probabilities, float* output, int outputStride) where TRows : IRows
    {
        var chunks = headDim / 16;
        var sums = stackalloc Vector512<float>[heads * chunks];
        for (var i = 0; i < heads * chunks; i++)
        {
            sums[i] = Vector512<float>.Zero;
        }
        for (var j = 0; j < count; j++)
        {
            for (var c = 0; c < chunks; c++)
            {
                var v = TRows.Load(values, offsets[j] + c * 16);
                for (var h = 0; h < heads; h++)
                {
                    sums[h * chunks + c] = Vector512.FusedMultiplyAdd(Vector512.Create(probabilities[h * count + j]), v, sums[h * chunks + c]);
                }
            }
        }
        for (var h = 0; h < heads; h++)
        {
            for (var c = 0; c < chunks; c++)
            {
                sums[h * chunks + c].Store(output + (long)h * outputStride + c * 16);
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
