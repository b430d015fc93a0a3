using System.Runtime.CompilerServices;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>The attention block's CPU kernel path for a small decode batch (see <see cref="DecodeStep"/>).</summary>
public sealed partial class Attention
{
    /// <summary>Rows of the fused q/k/v (0 when every group is Mamba's). Plain fields: a tensor's shape is a native call.</summary>
    internal int QkvRows => _qkvRows;

    /// <summary>Every head's output, side by side: the input width of o_proj.</summary>
    internal int HeadColumns => _headColumns;

    internal bool KernelsSupport => (qkv_proj?.Kernel.IsSupported ?? true) && o_proj.Kernel.IsSupported && (mamba?.KernelsSupport ?? true);

    /// <summary>
    /// Thread <paramref name="thread"/>'s share of the attention block of one decode step: q/k/v and the mixer's input
    /// projection, then attention per (sequence, group) and the mixer's recurrence, then o_proj added to the residual.
    /// Every thread runs this; the barriers separate what depends on other threads' results.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void Decode(DecodeStep step, int thread, float* normed)
    {
        var threads = step.Threads;
        var workspace = step.Workspace;
        var scratch = step.Scratch(thread);
        var batch = step.Batch;
        var hidden = workspace.Sizes.Hidden;

        KernelInput? input = null;
        if (qkv_proj is not null)
        {
            input = qkv_proj.Kernel.PrepareInput(normed, batch, hidden, scratch.Input);
            var (start, end) = threads.Share(thread, QkvRows, 4);
            qkv_proj.Kernel.Compute(input.Value, workspace.Qkv, QkvRows, start, end);
        }
        mamba?.DecodeInput(step, thread, normed, input);
        threads.Barrier();
        step.Mark(thread, StepPart.Projections);

        if (qkv_proj is not null)
        {
            AttendGroups(step, thread);
        }
        if (mamba is not null)
        {
            mamba.DecodeConvolution(step, thread);
            threads.Barrier();
            step.Mark(thread, StepPart.Attention);
            mamba.DecodeRecurrence(step, thread, _mixerHeads, _placedMixerColumns, _headDim, HeadColumns);
        }
        threads.Barrier();
        step.Mark(thread, mamba is null ? StepPart.Attention : StepPart.MambaRecurrence);

        var heads = o_proj.Kernel.PrepareInput(workspace.Heads, batch, HeadColumns, scratch.Input);
        var (first, last) = threads.Share(thread, hidden, 4);
        o_proj.Kernel.Compute(heads, workspace.Hidden, hidden, first, last, accumulate: true);
        threads.Barrier();
        step.Mark(thread, StepPart.OutputProjection);
    }

    /// <summary>This thread's (sequence, group) pairs: RoPE, the new key and value into the cache, attention over what the group may see.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void AttendGroups(DecodeStep step, int thread)
    {
        var workspace = step.Workspace;
        var scratch = step.Scratch(thread);
        var groupSize = _heads.GroupSize;
        var groups = _fullGroups + _windowGroups;
        var attendingHeads = _fullHeads + _windowHeads;
        var query = scratch.QueryKey;
        var key = query + groupSize * _headDim;
        var offsets = workspace.KeyOffsets[thread];
        var scores = workspace.Scores[thread];
        for (var task = thread; task < step.Batch * groups; task += step.Threads.Count)
        {
            int b = task / groups, group = task % groups;
            var position = step.Positions[b];
            var row = workspace.Qkv + (long)b * QkvRows;
            var cos = step.Cos + (long)position * (_headDim / 2);
            var sin = step.Sin + (long)position * (_headDim / 2);
            for (var h = 0; h < groupSize; h++)
            {
                var q = query + h * _headDim;
                new ReadOnlySpan<float>(row + (group * groupSize + h) * _headDim, _headDim).CopyTo(new Span<float>(q, _headDim));
                Kernel.Rope(q, cos, sin, _headDim);
            }
            new ReadOnlySpan<float>(row + (attendingHeads + group) * _headDim, _headDim).CopyTo(new Span<float>(key, _headDim));
            Kernel.Rope(key, cos, sin, _headDim);
            var value = row + (attendingHeads + groups + group) * _headDim;

            int count;
            Values keys, values;
            var pools = step.Storage.Memory(_layer);
            if (group < _fullGroups)
            {
                (keys, values) = (pools.Keys, pools.Values);
                count = FullKeyOffsets(step.Blocks[b], step.Storage.Layout.BlockSize, step.Storage.PoolRows, position + 1, group, offsets);
            }
            else
            {
                (keys, values) = (pools.RingKeys, pools.RingValues);
                count = RingKeyOffsets(step.Slots[b], position, group - _fullGroups, offsets);
            }
            // The new key and value first (offsets[^1] of the full path, the ring index of the position otherwise).
            var own = group < _fullGroups ? offsets[count - 1] : offsets[count];
            Kernel.Store(key, keys, own, _headDim);
            Kernel.Store(value, values, own, _headDim);

            var output = scratch.Output;
            AttentionKernel.Attend(query, groupSize, _headDim, keys, values, offsets, count, scores, output, _headDim);
            var target = workspace.Heads + (long)b * HeadColumns;
            for (var h = 0; h < groupSize; h++)
            {
                var original = _computedHeads[group * groupSize + h];
                new ReadOnlySpan<float>(output + h * _headDim, _headDim).CopyTo(new Span<float>(target + original * _headDim, _headDim));
            }
        }
    }

    /// <summary>
    /// Whether a prefill chunk's full-group attention runs on the kernels: on the CPU, without autograd and without
    /// recorded probabilities (a capture of layer inputs and head outputs, distillation's teacher, is fine: the heads
    /// are recorded from whichever path computed them). libtorch's CPU attention costs 3 ms per layer at 128 tokens
    /// and 140 ms at 1,024 here; the kernel reads each query's keys from the cache pool, causal by construction.
    /// </summary>
    private bool PrefillsWithKernels(ForwardContext context) =>
        Kernel.IsAccelerated && context.Storage.KernelsSupport && !context.Batch.Training && context.Batch.Capture is not { RecordsProbabilities: true }
        && _heads.GroupSize <= PrefillAttentionKernel.Lanes;

    /// <summary>
    /// Whether a sequence's attention in training runs as one autograd node on the CPU kernels
    /// (<see cref="CausalAttentionFunction"/>, full and windowed groups alike): the whole sequence at once (no past),
    /// nothing captured.
    /// </summary>
    private static bool TrainsWithKernels(Tensor query, int past, ForwardContext context) =>
        past == 0 && context.Batch.Training && context.Batch.Capture is null && CausalAttentionFunction.Supports(query);

    /// <summary>
    /// Causal attention of a chunk's n queries (positions past..past+n-1, RoPE applied, [n, fullHeads, hd]) over the
    /// sequence's keys in the pool (the chunk's own already written): → float32 [n, fullHeads, hd]. One task per
    /// (block of queries whose heads fill a vector, group), spread over the kernel threads.
    /// </summary>
    private unsafe Tensor PrefillFull(Tensor query, ForwardContext context, int sequence)
    {
        var cache = context.Batch.Caches[sequence];
        var past = cache.Length;
        var n = (int)query.shape[0];
        var storage = context.Storage;
        var pools = storage.Memory(_layer);
        var queries = query.to_type(ScalarType.Float32).contiguous();
        var output = empty(n, _fullHeads, _headDim, ScalarType.Float32);
        var threads = context.Batch.KernelThreads;
        var length = past + n;
        var groupSize = _heads.GroupSize;
        var perBlock = Math.Max(1, PrefillAttentionKernel.Lanes / groupSize);   // queries whose heads fill one vector
        var blocks = (n + perBlock - 1) / perBlock;
        var scratchFloats = PrefillAttentionKernel.ScratchFloats(_headDim);
        var offsets = TensorMemory.Allocate<long>(length);
        var scratch = TensorMemory.Allocate<float>((long)threads.Count * scratchFloats);
        try
        {
            FullKeyOffsets(cache.Blocks, storage.Layout.BlockSize, storage.PoolRows, length, group: 0, offsets);
            var q = TensorMemory.Pointer<float>(queries);
            var o = TensorMemory.Pointer<float>(output);
            var tasks = blocks * _fullGroups;
            threads.Run(thread =>
            {
                var own = scratch + (long)thread * scratchFloats;
                for (var task = thread; task < tasks; task += threads.Count)
                {
                    int block = task / _fullGroups, group = task % _fullGroups;
                    var groupStart = group * storage.PoolRows * _headDim;
                    var table = KeyTable.Causal(pools.Keys.Skip(groupStart), pools.Values.Skip(groupStart), offsets, length);
                    var first = block * perBlock;
                    PrefillAttentionKernel.Attend(q, o, _fullHeads, group * groupSize, groupSize, _headDim, first, Math.Min(perBlock, n - first), past, table, own);
                }
            });
        }
        finally
        {
            TensorMemory.Free(offsets);
            TensorMemory.Free(scratch);
        }
        return output;
    }

    /// <summary>
    /// Sink + window attention of a chunk's n queries ([n, windowHeads, hd]) over keys and values [windowGroups, m, hd]
    /// at the ascending <paramref name="positions"/>: each query sees the sinks and the last window positions up to
    /// its own. → float32 [n, windowHeads, hd].
    /// </summary>
    private unsafe Tensor PrefillWindow(Tensor query, Tensor keys, Tensor values, long[] positions, int past, ForwardContext context)
    {
        var n = (int)query.shape[0];
        var m = positions.Length;
        var queries = query.to_type(ScalarType.Float32).contiguous();
        var keyTable = keys.to_type(ScalarType.Float32).contiguous();
        var valueTable = values.to_type(ScalarType.Float32).contiguous();
        var output = empty(n, _windowHeads, _headDim, ScalarType.Float32);
        var threads = context.Batch.KernelThreads;
        var groupSize = _heads.GroupSize;
        var perBlock = Math.Max(1, PrefillAttentionKernel.Lanes / groupSize);
        var blocks = (n + perBlock - 1) / perBlock;
        var scratchFloats = PrefillAttentionKernel.ScratchFloats(_headDim);
        var offsets = TensorMemory.Allocate<long>(m);
        var scratch = TensorMemory.Allocate<float>((long)threads.Count * scratchFloats);
        try
        {
            for (var e = 0; e < m; e++)
            {
                offsets[e] = (long)e * _headDim;
            }
            var q = TensorMemory.Pointer<float>(queries);
            var o = TensorMemory.Pointer<float>(output);
            var k = new Values((byte*)TensorMemory.Pointer<float>(keyTable), false);
            var v = new Values((byte*)TensorMemory.Pointer<float>(valueTable), false);
            var tasks = blocks * _windowGroups;
            threads.Run(thread =>
            {
                var own = scratch + (long)thread * scratchFloats;
                for (var task = thread; task < tasks; task += threads.Count)
                {
                    int block = task / _windowGroups, group = task % _windowGroups;
                    var groupStart = (long)group * m * _headDim;
                    var table = new KeyTable(k.Skip(groupStart), v.Skip(groupStart), offsets, positions, m, _window.Size, _window.Sinks);
                    var first = block * perBlock;
                    PrefillAttentionKernel.Attend(q, o, _windowHeads, group * groupSize, groupSize, _headDim, first, Math.Min(perBlock, n - first), past, table, own);
                }
            });
        }
        finally
        {
            TensorMemory.Free(offsets);
            TensorMemory.Free(scratch);
        }
        return output;
    }

    /// <summary>Element offsets of positions 0..length-1 of a full group in the block pool [fullGroups, rows, hd].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe int FullKeyOffsets(IReadOnlyList<int> blocks, int blockSize, long poolRows, int length, int group, long* offsets)
    {
        var groupStart = group * poolRows;
        for (int block = 0, p = 0; p < length; block++)
        {
            var row = ((long)blocks[block] * blockSize + groupStart) * _headDim;
            for (var i = 0; i < blockSize && p < length; i++, p++, row += _headDim)
            {
                offsets[p] = row;
            }
        }
        return length;
    }

    /// <summary>
    /// Element offsets of the ring entries a query at <paramref name="position"/> sees once its own key is written
    /// (every filled entry: the ring holds exactly the sinks and the last window positions) in the rings
    /// [slots, windowGroups, capacity, hd], and, at index <c>count</c>, the entry the new key goes to.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe int RingKeyOffsets(int slot, int position, int group, long* offsets)
    {
        var capacity = _window.Capacity;
        var start = ((long)slot * _windowGroups + group) * capacity * _headDim;
        var count = Math.Min(capacity, position + 1);
        for (var i = 0; i < count; i++)
        {
            offsets[i] = start + (long)i * _headDim;
        }
        offsets[count] = start + (long)ForwardContext.RingIndex(_window, position) * _headDim;
        return count;
    }
}
