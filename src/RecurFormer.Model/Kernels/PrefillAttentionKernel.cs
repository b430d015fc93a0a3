using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Attention of a block of prefill queries of one KV group, flash-attention style: the block's query heads (up to 16:
/// queries × the group's heads) are the 16 lanes of a vector, so a key's scores for all of them are one vector built
/// from broadcasts of the key's elements, the softmax runs online per lane (running max and sum, the output
/// rescaled block by block), and the output accumulates transposed ([headDim] vectors of 16 lanes). No horizontal
/// reduction anywhere; each key and value row is read once per block of queries.
/// <para>
/// Keys are entries of a table in ascending position order (<see cref="KeyTable"/>: the cache pool through a
/// sequence's block table, or a window's gathered keys), read as float32 or bfloat16. A query at position p sees the
/// entries at positions j ≤ p with j &lt; sinks or j > p − window (window = ∞, sinks = 0: causal attention).
/// </para>
/// </summary>
internal static unsafe class PrefillAttentionKernel
{
    public const int Lanes = 16;

    /// <summary>Floats of scratch one call needs.</summary>
    public static int ScratchFloats(int headDim) => 2 * headDim * Lanes + Lanes * Lanes + Lanes * headDim;

    /// <param name="queries">[n, heads, hd] float32, RoPE applied; the block reads rows first..first+count-1, heads head0..head0+groupSize-1.</param>
    /// <param name="past">Position of query row 0.</param>
    /// <param name="output">Same layout as <paramref name="queries"/>.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Attend(float* queries, float* output, int heads, int head0, int groupSize, int headDim, int first, int count, int past,
        KeyTable table, float* scratch)
    {
        var lanes = count * groupSize;
        var queryT = (Vector512<float>*)scratch;                 // [hd] vectors: lane l = query (first + l / groupSize), head l % groupSize
        var outputT = queryT + headDim;                            // [hd]
        var block = outputT + headDim;                             // [16] scores, then probabilities, of a block of keys
        var rows = (float*)(block + Lanes);                        // [16][hd] the block's key rows as float32, then its value rows
        var values16 = rows;
        var keyRows = stackalloc float*[8];
        var lane = stackalloc float[Lanes];
        // Where each lane's query (and output) row starts: computed once, not in the transposing loops below, where the
        // division by a group size that is not a constant made the transposition and the final scatter cost more than
        // all the block's products together (9 µs of a call's ~9 at 256 tokens, measured by a throwaway timing).
        var rowOf = stackalloc long[Lanes];
        for (var l = 0; l < lanes; l++)
        {
            rowOf[l] = ((long)(first + l / groupSize) * heads + head0 + l % groupSize) * headDim;
        }

        for (var d = 0; d < headDim; d++)
        {
            for (var l = 0; l < Lanes; l++)
            {
                lane[l] = l < lanes ? queries[rowOf[l] + d] : 0f;
            }
            queryT[d] = Vector512.Load(lane);
            outputT[d] = Vector512<float>.Zero;
        }
        var earliest = past + first;                               // the block's first and last query positions
        var latest = past + first + count - 1;
        for (var l = 0; l < Lanes; l++)
        {
            lane[l] = l < lanes ? past + first + l / groupSize : latest; // padding lanes copy a real query
        }
        var queryPositions = Vector512.Load(lane);
        var scale = Vector512.Create(1f / MathF.Sqrt(headDim));
        var max = Vector512.Create(float.NegativeInfinity);
        var sum = Vector512<float>.Zero;

        // Entries any lane may see: the sinks, then the positions from the earliest query's window up to the latest query.
        var (sinkEnd, windowStart, end) = table.Visible(earliest, latest);
        for (var range = 0; range < 2; range++)
        {
            var (from, to) = range == 0 ? (0, Math.Min(sinkEnd, windowStart)) : (windowStart, end);
            for (var start = from; start < to; start += Lanes)
            {
                var size = Math.Min(Lanes, to - start);
                var blockMax = max;
                var k = 0;
                for (; k + 8 <= size; k += 8)
                {
                    // Eight keys at once: eight independent FMA chains keep both FMA units busy (one chain waits on latency).
                    for (var i = 0; i < 8; i++)
                    {
                        keyRows[i] = table.Keys.Row(table.Offsets[start + k + i], headDim, rows + i * headDim);
                    }
                    Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
                    float* r0 = keyRows[0], r1 = keyRows[1], r2 = keyRows[2], r3 = keyRows[3], r4 = keyRows[4], r5 = keyRows[5], r6 = keyRows[6], r7 = keyRows[7];
                    for (var d = 0; d < headDim; d++)
                    {
                        var qd = queryT[d];
                        s0 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r0[d]), s0);
                        s1 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r1[d]), s1);
                        s2 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r2[d]), s2);
                        s3 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r3[d]), s3);
                        s4 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r4[d]), s4);
                        s5 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r5[d]), s5);
                        s6 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r6[d]), s6);
                        s7 = Vector512.FusedMultiplyAdd(qd, Vector512.Create(r7[d]), s7);
                    }
                    block[k] = s0;
                    block[k + 1] = s1;
                    block[k + 2] = s2;
                    block[k + 3] = s3;
                    block[k + 4] = s4;
                    block[k + 5] = s5;
                    block[k + 6] = s6;
                    block[k + 7] = s7;
                }
                for (; k < size; k++)
                {
                    var key = table.Keys.Row(table.Offsets[start + k], headDim, rows);
                    var score = Vector512<float>.Zero;
                    for (var d = 0; d < headDim; d++)
                    {
                        score = Vector512.FusedMultiplyAdd(queryT[d], Vector512.Create(key[d]), score);
                    }
                    block[k] = score;
                }
                for (k = 0; k < size; k++)
                {
                    var score = block[k] * scale;
                    var position = table.PositionOf(start + k);
                    if (table.NeedsMask(position, earliest, latest))
                    {
                        score = Vector512.ConditionalSelect(table.Allowed(position, queryPositions), score, Vector512.Create(float.NegativeInfinity));
                    }
                    block[k] = score;
                    blockMax = Vector512.Max(blockMax, score);
                }
                var rescale = FastExp.Exp(max - blockMax);             // 0 on the first block (max = −∞)
                max = blockMax;
                sum *= rescale;
                for (k = 0; k < size; k++)
                {
                    var probability = FastExp.Exp(block[k] - max);
                    block[k] = probability;
                    sum += probability;
                    table.Values.Load(table.Offsets[start + k], headDim, values16 + k * headDim);
                }
                // Output dimensions eight at a time: eight accumulators in registers across the block's keys.
                var d8 = 0;
                for (; d8 + 8 <= headDim; d8 += 8)
                {
                    Vector512<float> o0 = outputT[d8] * rescale, o1 = outputT[d8 + 1] * rescale, o2 = outputT[d8 + 2] * rescale, o3 = outputT[d8 + 3] * rescale;
                    Vector512<float> o4 = outputT[d8 + 4] * rescale, o5 = outputT[d8 + 5] * rescale, o6 = outputT[d8 + 6] * rescale, o7 = outputT[d8 + 7] * rescale;
                    var v = values16 + d8;
                    for (var j = 0; j < size; j++, v += headDim)
                    {
                        var probability = block[j];
                        o0 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[0]), o0);
                        o1 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[1]), o1);
                        o2 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[2]), o2);
                        o3 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[3]), o3);
                        o4 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[4]), o4);
                        o5 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[5]), o5);
                        o6 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[6]), o6);
                        o7 = Vector512.FusedMultiplyAdd(probability, Vector512.Create(v[7]), o7);
                    }
                    outputT[d8] = o0;
                    outputT[d8 + 1] = o1;
                    outputT[d8 + 2] = o2;
                    outputT[d8 + 3] = o3;
                    outputT[d8 + 4] = o4;
                    outputT[d8 + 5] = o5;
                    outputT[d8 + 6] = o6;
                    outputT[d8 + 7] = o7;
                }
                for (var d = d8; d < headDim; d++)
                {
                    var acc = outputT[d] * rescale;
                    for (var j = 0; j < size; j++)
                    {
                        acc = Vector512.FusedMultiplyAdd(block[j], Vector512.Create(values16[j * headDim + d]), acc);
                    }
                    outputT[d] = acc;
                }
            }
        }
        var inverse = Vector512<float>.One / sum;
        for (var d = 0; d < headDim; d++)
        {
            (outputT[d] * inverse).Store(lane);
            for (var l = 0; l < lanes; l++)
            {
                output[rowOf[l] + d] = lane[l];
            }
        }
    }
}

/// <summary>
/// Keys and values in ascending position order: entry e's rows are at element offset <see cref="Offsets"/>[e] of the
/// pools, at position <see cref="Positions"/>[e] (or e itself when there are no positions: a sequence's whole past).
/// </summary>
internal readonly unsafe struct KeyTable(Values keys, Values values, long* offsets, long[]? positions, int entries, int window, int sinks)
{
    public readonly Values Keys = keys;
    public readonly Values Values = values;
    public readonly long* Offsets = offsets;
    private readonly long[]? _positions = positions;
    private readonly int _entries = entries;
    private readonly int _window = window;
    private readonly int _sinks = sinks;

    /// <summary>A sequence's keys at positions 0..entries-1 (causal attention over its whole past).</summary>
    public static KeyTable Causal(Values keys, Values values, long* offsets, int entries) => new(keys, values, offsets, null, entries, int.MaxValue, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long PositionOf(int entry) => _positions is null ? entry : _positions[entry];

    /// <summary>Entries [0, sinkEnd) are sinks; [windowStart, end) the positions from the earliest query's window to the latest query.</summary>
    public (int SinkEnd, int WindowStart, int End) Visible(int earliest, int latest)
    {
        if (_positions is null)
        {
            return (0, 0, Math.Min(_entries, latest + 1));
        }
        var sinkEnd = 0;
        while (sinkEnd < _entries && _positions[sinkEnd] < _sinks)
        {
            sinkEnd++;
        }
        var windowStart = LowerBound(earliest - (long)_window + 1);
        return (sinkEnd, windowStart, LowerBound(latest + 1L));
    }

    /// <summary>Whether some lane of a block with queries at earliest..latest may not see <paramref name="position"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool NeedsMask(long position, int earliest, int latest) =>
        position > earliest || (position >= _sinks && _window != int.MaxValue && position <= latest - (long)_window);

    /// <summary>Lanes whose query sees <paramref name="position"/>: j ≤ p, and j &lt; sinks or j > p − window.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<float> Allowed(long position, Vector512<float> queries)
    {
        var key = Vector512.Create((float)position);
        var causal = Vector512.LessThanOrEqual(key, queries);
        if (_window == int.MaxValue || position < _sinks)
        {
            return causal;
        }
        return causal & Vector512.GreaterThan(key, queries - Vector512.Create((float)_window));
    }

    private int LowerBound(long position)
    {
        int low = 0, high = _entries;
        while (low < high)
        {
            var middle = (low + high) / 2;
            if (_positions![middle] < position)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }
        return low;
    }
}
