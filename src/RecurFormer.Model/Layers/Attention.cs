using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// The attention block of one layer, hybrid in general: grouped-query self-attention with RoPE for the kept KV
/// groups (full context, or sinks + a recent window for windowed groups), and one Mamba-1 mixer that computes the
/// outputs of the replaced groups' query heads from the same normalised input. All head outputs are put back in
/// their original order before <c>o_proj</c>, so o_proj keeps its pretrained weights. Tokens are packed over the
/// batch's sequences; each sequence attends to its own cache.
/// </summary>
public sealed class Attention : nn.Module
{
#pragma warning disable IDE1006
    private readonly Linear? q_proj;
    private readonly Linear? k_proj;
    private readonly Linear? v_proj;
    private readonly Linear o_proj;
    private readonly MambaMixer? mamba;
#pragma warning restore IDE1006
    private readonly int _layer;
    private readonly int _headDim;
    private readonly LayerHeads _heads;
    private readonly WindowSpec _window;
    private readonly int _attendingHeads;

    // Index tensors that pick full / windowed heads and groups out of the projections, and put head outputs back.
    private readonly Tensor? _fullHeadIndex, _fullGroupIndex, _windowHeadIndex, _windowGroupIndex, _attendingOrder, _headOrder;

    public Attention(TransformerConfig config, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        _layer = layer;
        _headDim = config.HeadDim;
        _heads = config.Heads(layer);
        _window = config.Hybrid.Window;
        long hidden = config.HiddenSize;
        var attendingGroups = _heads.AttendingGroups.Length;
        _attendingHeads = attendingGroups * config.GroupSize;
        if (attendingGroups > 0)
        {
            q_proj = Linear.Load(weights, $"{prefix}.q_proj", hidden, _attendingHeads * _headDim, config.QkvBias);
            k_proj = Linear.Load(weights, $"{prefix}.k_proj", hidden, attendingGroups * _headDim, config.QkvBias);
            v_proj = Linear.Load(weights, $"{prefix}.v_proj", hidden, attendingGroups * _headDim, config.QkvBias);
        }
        o_proj = Linear.Load(weights, $"{prefix}.o_proj", config.NumAttentionHeads * _headDim, hidden, config.OutputBias);
        if (_heads.MambaGroups.Length > 0)
        {
            var spec = config.Hybrid.Mamba;
            var output = _heads.MambaOutputSize;
            var shape = new MambaMixerShape(config.HiddenSize, output, spec.Expand * output, spec.StateSize, spec.ConvKernel,
                spec.TimeStepRank ?? (int)Math.Ceiling(config.HiddenSize / 16.0), UseBias: false, UseConvBias: true);
            mamba = new MambaMixer(shape, weights, $"{prefix}.mamba", layer);
        }

        if (!_heads.IsPlain)
        {
            var device = weights.Target.Device;
            var inAttending = (int[] groups) => _heads.HeadsOf(_heads.IndexInAttending(groups));
            _fullHeadIndex = Index(inAttending(_heads.FullGroups), device);
            _fullGroupIndex = Index(_heads.IndexInAttending(_heads.FullGroups), device);
            _windowHeadIndex = Index(inAttending(_heads.WindowGroups), device);
            _windowGroupIndex = Index(_heads.IndexInAttending(_heads.WindowGroups), device);
            // [full heads ++ window heads] → attending order; [attending heads ++ mamba heads] → original order.
            _attendingOrder = Index(InversePermutation([.. inAttending(_heads.FullGroups), .. inAttending(_heads.WindowGroups)]), device);
            _headOrder = Index(InversePermutation([.. _heads.HeadsOf(_heads.AttendingGroups), .. _heads.HeadsOf(_heads.MambaGroups)]), device);
        }
        RegisterComponents();
    }

    public LayerHeads Heads => _heads;
    public MambaMixer? Mamba => mamba;

    /// <summary>x [T, hidden] packed over the batch's sequences → [T, hidden].</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, ForwardBatch batch)
    {
        using var scope = NewDisposeScope();
        var heads = HeadOutputs(x, cos, sin, batch);
        batch.Capture?.RecordLayer(_layer, x, heads);
        return o_proj.forward(heads).MoveToOuterDisposeScope();
    }

    /// <summary>The concatenated head outputs that feed o_proj: [T, heads × headDim].</summary>
    private Tensor HeadOutputs(Tensor x, Tensor cos, Tensor sin, ForwardBatch batch)
    {
        var tokens = x.shape[0];
        Tensor? attended = null;
        if (q_proj is not null)
        {
            var q = RotaryEmbedding.Apply(q_proj.forward(x).view(tokens, _attendingHeads, _headDim), cos, sin);
            var k = RotaryEmbedding.Apply(k_proj!.forward(x).view(tokens, -1, _headDim), cos, sin);
            var v = v_proj!.forward(x).view(tokens, -1, _headDim);
            attended = AttendAll(q, k, v, batch).reshape(tokens, _attendingHeads * _headDim);
        }
        if (mamba is null)
        {
            return attended!;
        }
        var replaced = mamba.Forward(x, batch);                                                  // [T, mambaHeads × hd]
        var merged = attended is null ? replaced : cat([attended, replaced], 1);
        return merged.view(tokens, -1, _headDim).index_select(1, _headOrder!).reshape(tokens, -1);
    }

    /// <summary>q [T, attendingHeads, hd], k/v [T, attendingGroups, hd] → [T, attendingHeads, hd].</summary>
    private Tensor AttendAll(Tensor q, Tensor k, Tensor v, ForwardBatch batch)
    {
        var outputs = new Tensor[batch.SequenceCount];
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            var start = batch.Offsets[s];
            var count = batch.TokenCount(s);
            var query = q.narrow(0, start, count).transpose(0, 1);                                // [H, n, hd]
            var keys = k.narrow(0, start, count).transpose(0, 1);                                 // [G, n, hd]
            var values = v.narrow(0, start, count).transpose(0, 1);
            outputs[s] = (_heads.IsPlain
                ? AttendFull(query, keys, values, batch, s)
                : AttendMixed(query, keys, values, batch, s)).transpose(0, 1);                    // [n, H, hd]
        }
        return outputs.Length == 1 ? outputs[0] : cat(outputs, 0);
    }

    private Tensor AttendMixed(Tensor query, Tensor keys, Tensor values, ForwardBatch batch, int sequence)
    {
        var parts = new List<Tensor>();
        if (_heads.FullGroups.Length > 0)
        {
            parts.Add(AttendFull(query.index_select(0, _fullHeadIndex!), keys.index_select(0, _fullGroupIndex!), values.index_select(0, _fullGroupIndex!), batch, sequence));
        }
        if (_heads.WindowGroups.Length > 0)
        {
            parts.Add(AttendWindow(query.index_select(0, _windowHeadIndex!), keys.index_select(0, _windowGroupIndex!), values.index_select(0, _windowGroupIndex!), batch, sequence));
        }
        return (parts.Count == 1 ? parts[0] : cat(parts, 0)).index_select(0, _attendingOrder!);
    }

    /// <summary>Causal attention of n queries at positions past..past+n-1 over all past+n keys.</summary>
    private Tensor AttendFull(Tensor query, Tensor keys, Tensor values, ForwardBatch batch, int sequence)
    {
        var cache = batch.Caches[sequence];
        var past = cache.Length;
        var (allKeys, allValues) = cache.AppendKeyValues(_layer, keys, values);
        var n = query.shape[1];
        if (batch.Capture is { RecordsProbabilities: true })
        {
            return AttendEagerly(query, allKeys, allValues, CausalMask(n, past, query.device), batch.Capture, sequence);
        }
        var k = RepeatGroups(allKeys);
        var v = RepeatGroups(allValues);
        if (n == 1)
        {
            return nn.functional.scaled_dot_product_attention(query, k, v);
        }
        if (past == 0)
        {
            return nn.functional.scaled_dot_product_attention(query, k, v, is_casual: true);
        }
        return nn.functional.scaled_dot_product_attention(query, k, v, CausalMask(n, past, query.device));
    }

    /// <summary>Sink + recent-window attention: query at position p sees keys at positions j ≤ p with j &lt; sinks or j > p − window.</summary>
    private Tensor AttendWindow(Tensor query, Tensor keys, Tensor values, ForwardBatch batch, int sequence)
    {
        var cache = batch.Caches[sequence];
        var past = cache.Length;
        var (allKeys, allValues, keyPositions) = cache.AppendWindowKeyValues(_layer, keys, values, _window);
        var n = query.shape[1];
        var queryPositions = (arange(n, device: query.device) + past).unsqueeze(1);             // [n, 1]
        var positions = keyPositions.unsqueeze(0);                                               // [1, m]
        var allowed = (positions <= queryPositions).logical_and((positions < _window.Sinks).logical_or(positions > queryPositions - _window.Size));
        if (batch.Capture is { RecordsProbabilities: true })
        {
            return AttendEagerly(query, allKeys, allValues, allowed, batch.Capture, sequence);
        }
        return nn.functional.scaled_dot_product_attention(query, RepeatGroups(allKeys), RepeatGroups(allValues), allowed);
    }

    /// <summary>The same computation with explicit probabilities, recorded for analysis (plain layers only).</summary>
    private Tensor AttendEagerly(Tensor query, Tensor keys, Tensor values, Tensor allowed, AttentionCapture capture, int sequence)
    {
        var scores = query.matmul(RepeatGroups(keys).transpose(1, 2)) / Math.Sqrt(_headDim);   // [H, n, m]
        scores = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity);
        var probabilities = nn.functional.softmax(scores, -1, ScalarType.Float32).to_type(query.dtype);
        if (_heads.IsPlain)
        {
            capture.RecordProbabilities(_layer, sequence, probabilities);
        }
        return probabilities.matmul(RepeatGroups(values));
    }

    /// <summary>True where query i (position past + i) may see key j: j ≤ past + i. Shape [n, past + n].</summary>
    private static Tensor CausalMask(long n, long past, Device device) =>
        arange(past + n, device: device).unsqueeze(0) <= (arange(n, device: device) + past).unsqueeze(1);

    /// <summary>[G, T, hd] → [G × groupSize, T, hd]: query head h uses KV head h / groupSize.</summary>
    private Tensor RepeatGroups(Tensor kv) => _heads.GroupSize == 1 ? kv : kv.repeat_interleave(_heads.GroupSize, 0);

    private static Tensor Index(int[] values, Device device) => tensor(values.Select(v => (long)v).ToArray(), device: device).DetachFromDisposeScope();

    private static int[] InversePermutation(int[] order)
    {
        var inverse = new int[order.Length];
        for (var i = 0; i < order.Length; i++)
        {
            inverse[order[i]] = i;
        }
        return inverse;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var index in new[] { _fullHeadIndex, _fullGroupIndex, _windowHeadIndex, _windowGroupIndex, _attendingOrder, _headOrder })
            {
                index?.Dispose();
            }
        }
        base.Dispose(disposing);
    }
}
