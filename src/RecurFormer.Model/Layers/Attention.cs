using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// The attention block of one layer, hybrid in general: grouped-query self-attention with RoPE for the kept KV
/// groups (full context, or sinks + a recent window for windowed groups), and one Mamba-1 mixer that computes the
/// outputs of the replaced groups' query heads from the same normalised input (for window-Mamba groups, Samba-style,
/// the mixer's output is added to their window attention's). All head outputs are put back in their original order
/// before <c>o_proj</c>, so o_proj keeps its pretrained weights.
/// <para>
/// q, k and v of the kept groups are one fused projection, its rows ordered full groups first, then windowed ones
/// (the checkpoint keeps q_proj/k_proj/v_proj in their own order). Prefill attends sequence by sequence (causal
/// within the packed tokens); decode attends the whole batch in one call per kind of group, through the cache
/// pools. The CPU kernel path of the same layer is in Attention.Kernels.cs.
/// </para>
/// </summary>
public sealed partial class Attention : nn.Module
{
#pragma warning disable IDE1006
    private readonly Linear? qkv_proj;
    private readonly Linear o_proj;
    private readonly MambaMixer? mamba;
#pragma warning restore IDE1006
    private readonly int _layer;
    private readonly int _headDim;
    private readonly LayerHeads _heads;
    private readonly WindowSpec _window;
    private readonly int _fullHeads, _windowHeads, _fullGroups, _windowGroups, _qkvRows, _headColumns;

    /// <summary>Columns of the mixer's output that replace heads (Mamba groups) and that add to window heads (window-Mamba groups).</summary>
    private readonly int _placedMixerColumns, _addedMixerColumns;

    /// <summary>The original head index of each head the mixer outputs: Mamba groups' heads, then window-Mamba groups'.</summary>
    private readonly int[] _mixerHeads;

    /// <summary>[full heads ++ window heads ++ Mamba heads] → original head order; null for a plain layer.</summary>
    private readonly Tensor? _headOrder;

    /// <summary>The original head index of each head in computed order (full, window, Mamba).</summary>
    private readonly int[] _computedHeads;

    public Attention(TransformerConfig config, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        _layer = layer;
        _headDim = config.HeadDim;
        _heads = config.Heads(layer);
        _window = config.Hybrid.Window;
        _fullGroups = _heads.FullGroups.Length;
        _windowGroups = _heads.WindowGroups.Length;
        _fullHeads = _fullGroups * _heads.GroupSize;
        _windowHeads = _windowGroups * _heads.GroupSize;
        long hidden = config.HiddenSize;
        int[] computedGroups = [.. _heads.FullGroups, .. _heads.WindowGroups];
        _computedHeads = [.. _heads.HeadsOf(computedGroups), .. _heads.HeadsOf(_heads.MambaGroups)];
        _mixerHeads = _heads.HeadsOf(_heads.MixerGroups);
        _placedMixerColumns = _heads.MambaGroups.Length * _heads.GroupSize * _headDim;
        _addedMixerColumns = _heads.WindowMambaGroups.Length * _heads.GroupSize * _headDim;
        if (computedGroups.Length > 0)
        {
            qkv_proj = Linear.LoadFused(weights, $"{prefix}.qkv_proj", hidden, config.QkvBias, FusedParts(prefix, computedGroups));
        }
        o_proj = Linear.Load(weights, $"{prefix}.o_proj", config.NumAttentionHeads * _headDim, hidden, config.OutputBias);
        _qkvRows = (_fullHeads + _windowHeads + 2 * computedGroups.Length) * _headDim;
        _headColumns = config.NumAttentionHeads * _headDim;
        if (config.MixerShape(layer) is { } shape)
        {
            mamba = new MambaMixer(shape, weights, $"{prefix}.mamba", layer);
        }
        if (!_heads.IsPlain)
        {
            var inverse = new long[_computedHeads.Length];
            for (var i = 0; i < _computedHeads.Length; i++)
            {
                inverse[_computedHeads[i]] = i;
            }
            _headOrder = tensor(inverse, device: weights.Target.Device).DetachFromDisposeScope();
        }
        RegisterComponents();
    }

    /// <summary>
    /// Where each checkpoint row of q_proj (kept heads), k_proj and v_proj (kept groups), all in original order,
    /// goes in the fused weight [q | k | v], each part in computed group order.
    /// </summary>
    private Linear.FusedPart[] FusedParts(string prefix, int[] computedGroups)
    {
        var groupSize = _heads.GroupSize;
        var attending = _heads.AttendingGroups;
        var queryRows = (long)computedGroups.Length * groupSize * _headDim;
        var groupRows = (long)computedGroups.Length * _headDim;
        long[] Rows(long start, int perGroup) => attending
            .SelectMany(group => Enumerable.Range(0, perGroup * _headDim).Select(i => start + (long)Array.IndexOf(computedGroups, group) * perGroup * _headDim + i))
            .ToArray();
        return
        [
            new($"{prefix}.q_proj", Rows(0, groupSize)),
            new($"{prefix}.k_proj", Rows(queryRows, 1)),
            new($"{prefix}.v_proj", Rows(queryRows + groupRows, 1)),
        ];
    }

    public LayerHeads Heads => _heads;
    public MambaMixer? Mamba => mamba;
    public Linear OutputProjection => o_proj;

    /// <summary>x [T, hidden] packed over the batch's sequences → [T, hidden].</summary>
    public Tensor Forward(Tensor x, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        return o_proj.forward(RecordedHeads(x, context)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The head outputs [T, heads × headDim] without o_proj, recorded by the batch's capture like <see cref="Forward"/>'s:
    /// where a forward that stops at this layer stops (<see cref="CausalLM.ForwardBatch.LastLayer"/>).
    /// </summary>
    public Tensor RecordedHeads(Tensor x, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var heads = HeadOutputs(x, context);
        context.Batch.Capture?.RecordLayer(_layer, x, heads);
        return heads.MoveToOuterDisposeScope();
    }

    /// <summary>The concatenated head outputs that feed o_proj: [T, heads × headDim], original head order.</summary>
    private Tensor HeadOutputs(Tensor x, ForwardContext context)
    {
        var tokens = x.shape[0];
        var parts = new List<Tensor>(3);
        var mixed = mamba?.Forward(x, context);                                                // [T, mixer heads × hd]
        if (qkv_proj is not null)
        {
            var attendingHeads = _fullHeads + _windowHeads;
            var groups = _fullGroups + _windowGroups;
            var qkv = qkv_proj.forward(x);
            var q = RotaryEmbedding.Apply(qkv.narrow(1, 0, attendingHeads * _headDim).view(tokens, attendingHeads, _headDim), context.Cos!, context.Sin!, context.Batch.KernelThreads);
            var k = RotaryEmbedding.Apply(qkv.narrow(1, attendingHeads * _headDim, groups * _headDim).view(tokens, groups, _headDim), context.Cos!, context.Sin!, context.Batch.KernelThreads);
            var v = qkv.narrow(1, (attendingHeads + groups) * _headDim, groups * _headDim).view(tokens, groups, _headDim);
            var attended = Attend(q, k, v, context).reshape(tokens, attendingHeads * _headDim);
            if (_addedMixerColumns > 0)
            {
                // The window-Mamba heads are the last block of the attention's output and of the mixer's.
                var own = attendingHeads * _headDim - _addedMixerColumns;
                parts.Add(attended.narrow(1, 0, own));
                parts.Add(attended.narrow(1, own, _addedMixerColumns) + mixed!.narrow(1, _placedMixerColumns, _addedMixerColumns).to_type(attended.dtype));
            }
            else
            {
                parts.Add(attended);
            }
        }
        if (_placedMixerColumns > 0)
        {
            parts.Add(_addedMixerColumns > 0 ? mixed!.narrow(1, 0, _placedMixerColumns) : mixed!);
        }
        var merged = parts.Count == 1 ? parts[0] : cat(parts, 1);
        return _headOrder is null ? merged : merged.view(tokens, -1, _headDim).index_select(1, _headOrder).reshape(tokens, -1);
    }

    /// <summary>q [T, heads, hd], k/v [T, groups, hd] → [T, heads, hd]: decoding sequences together, prefill chunks one by one.</summary>
    private Tensor Attend(Tensor q, Tensor k, Tensor v, ForwardContext context)
    {
        if (context.Prefilling.Length == 0)
        {
            return AttendDecode(q, k, v, context);
        }
        if (context.Decoding.Length == 0)
        {
            return cat(context.Prefilling.Select(s => AttendPrefill(q, k, v, context, s)).ToArray(), 0);
        }
        var output = empty_like(q);
        var rows = context.DecodeRows;
        output.index_copy_(0, rows, AttendDecode(q.index_select(0, rows), k.index_select(0, rows), v.index_select(0, rows), context));
        foreach (var s in context.Prefilling)
        {
            output.narrow(0, context.Batch.Offsets[s], context.Batch.TokenCount(s)).copy_(AttendPrefill(q, k, v, context, s));
        }
        return output;
    }

    /// <summary>One token per decoding sequence, all at once: q [B, heads, hd], k/v [B, groups, hd] → [B, heads, hd].</summary>
    private Tensor AttendDecode(Tensor q, Tensor k, Tensor v, ForwardContext context)
    {
        var storage = context.Storage;
        var batch = q.shape[0];
        var outputs = new List<Tensor>(2);
        if (_fullGroups > 0)
        {
            var keys = storage.Keys(_layer)!;
            var values = storage.Values(_layer)!;
            keys.index_copy_(1, context.NewRows, k.narrow(1, 0, _fullGroups).transpose(0, 1).to_type(keys.dtype));
            values.index_copy_(1, context.NewRows, v.narrow(1, 0, _fullGroups).transpose(0, 1).to_type(values.dtype));
            var (rows, mask) = context.KeyRows;
            outputs.Add(AttendGrouped(q.narrow(1, 0, _fullHeads), Gather(keys, rows, batch, q.dtype), Gather(values, rows, batch, q.dtype), mask));
        }
        if (_windowGroups > 0)
        {
            var ringKeys = storage.RingKeys(_layer)!;
            var ringValues = storage.RingValues(_layer)!;
            var rows = context.RingRows(_windowGroups);
            ringKeys.view(-1, _headDim).index_copy_(0, rows, k.narrow(1, _fullGroups, _windowGroups).reshape(-1, _headDim).to_type(ringKeys.dtype));
            ringValues.view(-1, _headDim).index_copy_(0, rows, v.narrow(1, _fullGroups, _windowGroups).reshape(-1, _headDim).to_type(ringValues.dtype));
            var ringK = ringKeys.index_select(0, context.Slots).to_type(q.dtype);                       // [B, groups, capacity, hd]
            var ringV = ringValues.index_select(0, context.Slots).to_type(q.dtype);
            outputs.Add(AttendGrouped(q.narrow(1, _fullHeads, _windowHeads), ringK, ringV, context.RingMask));
        }
        return outputs.Count == 1 ? outputs[0] : cat(outputs, 1);
    }

    /// <summary>Pool rows [B × L] of a [groups, rows, hd] pool → [B, groups, L, hd] in the compute dtype.</summary>
    private Tensor Gather(Tensor pool, Tensor rows, long batch, ScalarType dtype) =>
        pool.index_select(1, rows).to_type(dtype).view(pool.shape[0], batch, -1, _headDim).permute(1, 0, 2, 3);

    /// <summary>
    /// Grouped-query decode attention with no repeated KV: the query heads of a group are the "query positions" of
    /// one attention over that group's keys. q [B, groups × groupSize, hd], keys [B, groups, L, hd] → [B, heads, hd].
    /// </summary>
    private Tensor AttendGrouped(Tensor q, Tensor keys, Tensor values, Tensor mask)
    {
        var batch = q.shape[0];
        var grouped = q.reshape(batch, keys.shape[1], _heads.GroupSize, _headDim);
        return nn.functional.scaled_dot_product_attention(grouped, keys, values, mask).reshape(batch, -1, _headDim);
    }

    /// <summary>The tokens of one sequence: its rows of q [T, heads, hd], k/v [T, groups, hd] → [n, heads, hd].</summary>
    private Tensor AttendPrefill(Tensor q, Tensor k, Tensor v, ForwardContext context, int s)
    {
        var start = context.Batch.Offsets[s];
        var count = context.Batch.TokenCount(s);
        var query = q.narrow(0, start, count);
        var keys = k.narrow(0, start, count);
        var values = v.narrow(0, start, count);
        var parts = new List<Tensor>(2);
        if (_fullGroups > 0)
        {
            parts.Add(AttendFull(query.narrow(1, 0, _fullHeads), keys.narrow(1, 0, _fullGroups), values.narrow(1, 0, _fullGroups), context, s));
        }
        if (_windowGroups > 0)
        {
            parts.Add(AttendWindow(query.narrow(1, _fullHeads, _windowHeads), keys.narrow(1, _fullGroups, _windowGroups), values.narrow(1, _fullGroups, _windowGroups), context, s));
        }
        return parts.Count == 1 ? parts[0] : cat(parts, 1);
    }

    /// <summary>
    /// Causal attention of n new tokens (positions past..past+n-1) over all past+n keys; q [n, heads, hd],
    /// k/v [n, groups, hd]. The new keys go to the pool; a sequence with no past attends to them directly (so
    /// training never reads back through the cache).
    /// </summary>
    private Tensor AttendFull(Tensor query, Tensor keys, Tensor values, ForwardContext context, int sequence)
    {
        var storage = context.Storage;
        var past = context.Batch.Caches[sequence].Length;
        var n = (int)query.shape[0];
        var keyPool = storage.Keys(_layer)!;
        var valuePool = storage.Values(_layer)!;
        var newRows = context.RowsOf(sequence, past, past + n);
        keys = keys.transpose(0, 1);                                                                  // [G, n, hd]
        values = values.transpose(0, 1);
        keyPool.index_copy_(1, newRows, keys.detach().to_type(keyPool.dtype));
        valuePool.index_copy_(1, newRows, values.detach().to_type(valuePool.dtype));
        if (TrainsWithKernels(query, past, context))
        {
            // Training on the CPU: one autograd node, computed in float32 like libtorch's flash path, faster at these lengths.
            return CausalAttentionFunction.Apply(query, keys.transpose(0, 1), values.transpose(0, 1), context.Batch.KernelThreads);
        }
        if (past > 0)
        {
            var rows = context.RowsOf(sequence, 0, past + n);
            keys = keyPool.index_select(1, rows).to_type(query.dtype);                                 // [G, m, hd]
            values = valuePool.index_select(1, rows).to_type(query.dtype);
        }
        if (PrefillsWithKernels(context))
        {
            return PrefillFull(query, context, sequence).to_type(query.dtype);
        }
        var q = query.transpose(0, 1);                                                               // [H, n, hd]
        var kk = RepeatGroups(keys);                                                                 // [H, m, hd]
        var vv = RepeatGroups(values);
        if (context.Batch.Capture is { RecordsProbabilities: true } capture)
        {
            return AttendEagerly(q, kk, vv, CausalMask(n, past, query.device), capture, sequence).transpose(0, 1);
        }
        var attended = past == 0
            ? nn.functional.scaled_dot_product_attention(q, kk, vv, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q, kk, vv, CausalMask(n, past, query.device));
        return attended.transpose(0, 1);
    }

    /// <summary>
    /// Sink + recent-window attention of n new tokens: query at position p sees keys at positions j ≤ p with
    /// j &lt; sinks or j > p − window. Reads what the ring held before this step plus the new keys, then keeps in
    /// the ring the new positions that a later query can still see.
    /// </summary>
    private Tensor AttendWindow(Tensor query, Tensor keys, Tensor values, ForwardContext context, int sequence)
    {
        var storage = context.Storage;
        var cache = context.Batch.Caches[sequence];
        var past = cache.Length;
        var n = (int)query.shape[0];
        var device = query.device;
        var ringKeys = storage.RingKeys(_layer)![cache.Slot];                                       // [groups, capacity, hd]
        var ringValues = storage.RingValues(_layer)![cache.Slot];

        var held = Math.Min(_window.Capacity, past);
        var positions = new long[held + n];
        for (var i = 0; i < held; i++)
        {
            positions[i] = ForwardContext.RingPosition(_window, i, past);
        }
        for (var i = 0; i < n; i++)
        {
            positions[held + i] = past + i;
        }
        keys = keys.transpose(0, 1);                                                                  // [G, n, hd]
        values = values.transpose(0, 1);
        var allKeys = held == 0 ? keys : cat([ringKeys.narrow(1, 0, held).to_type(keys.dtype), keys], 1);
        var allValues = held == 0 ? values : cat([ringValues.narrow(1, 0, held).to_type(values.dtype), values], 1);

        var survivors = Enumerable.Range(past, n).Where(p => p < _window.Sinks || p >= past + n - _window.Size).ToArray();
        if (survivors.Length > 0)
        {
            var source = tensor(survivors.Select(p => (long)(p - past)).ToArray(), device: device);
            var target = tensor(survivors.Select(p => (long)ForwardContext.RingIndex(_window, p)).ToArray(), device: device);
            ringKeys.index_copy_(1, target, keys.detach().index_select(1, source).to_type(ringKeys.dtype));
            ringValues.index_copy_(1, target, values.detach().index_select(1, source).to_type(ringValues.dtype));
        }

        if (TrainsWithKernels(query, past, context))
        {
            // Training on the CPU, as AttendFull: one autograd node, whose scores cover the sinks' and the window's keys only.
            return CausalAttentionFunction.Apply(query, keys.transpose(0, 1), values.transpose(0, 1), context.Batch.KernelThreads, _window);
        }
        if (PrefillsWithKernels(context))
        {
            // Keys in position order (the ring holds them circularly): each query's keys are then two runs.
            var order = Enumerable.Range(0, positions.Length).OrderBy(i => positions[i]).Select(i => (long)i).ToArray();
            var sorted = tensor(order, device: device);
            return PrefillWindow(query, allKeys.index_select(1, sorted), allValues.index_select(1, sorted), order.Select(i => positions[i]).ToArray(), past, context)
                .to_type(query.dtype);
        }
        var queryPositions = (arange(n, device: device) + past).unsqueeze(1);                        // [n, 1]
        var keyPositions = tensor(positions, device: device).unsqueeze(0);                           // [1, m]
        var allowed = (keyPositions <= queryPositions).logical_and((keyPositions < _window.Sinks).logical_or(keyPositions > queryPositions - _window.Size));
        var q = query.transpose(0, 1);
        var kk = RepeatGroups(allKeys);
        var vv = RepeatGroups(allValues);
        if (context.Batch.Capture is { RecordsProbabilities: true } capture)
        {
            return AttendEagerly(q, kk, vv, allowed, capture, sequence).transpose(0, 1);
        }
        return nn.functional.scaled_dot_product_attention(q, kk, vv, allowed).transpose(0, 1);
    }

    /// <summary>The same computation with explicit probabilities, recorded for analysis (plain layers only).</summary>
    private Tensor AttendEagerly(Tensor query, Tensor keys, Tensor values, Tensor allowed, AttentionCapture capture, int sequence)
    {
        var scores = query.matmul(keys.transpose(1, 2)) / Math.Sqrt(_headDim);                       // [H, n, m]
        scores = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity);
        var probabilities = nn.functional.softmax(scores, -1, ScalarType.Float32).to_type(query.dtype);
        if (_heads.IsPlain)
        {
            capture.RecordProbabilities(_layer, sequence, probabilities);
        }
        return probabilities.matmul(values);
    }

    /// <summary>True where query i (position past + i) may see key j: j ≤ past + i. Shape [n, past + n].</summary>
    private static Tensor CausalMask(long n, long past, Device device) =>
        arange(past + n, device: device).unsqueeze(0) <= (arange(n, device: device) + past).unsqueeze(1);

    /// <summary>[G, T, hd] → [G × groupSize, T, hd]: query head h uses KV head h / groupSize.</summary>
    private Tensor RepeatGroups(Tensor kv) => _heads.GroupSize == 1 ? kv : kv.repeat_interleave(_heads.GroupSize, 0);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _headOrder?.Dispose();
        }
        base.Dispose(disposing);
    }
}
