using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>Grouped-query self-attention with RoPE over packed tokens, each sequence attending to its own cache.</summary>
public sealed class Attention : nn.Module
{
#pragma warning disable IDE1006
    private readonly Linear q_proj;
    private readonly Linear k_proj;
    private readonly Linear v_proj;
    private readonly Linear o_proj;
#pragma warning restore IDE1006
    private readonly int _layer;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    public Attention(TransformerConfig config, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        _layer = layer;
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        long hidden = config.HiddenSize;
        q_proj = Linear.Load(weights, $"{prefix}.q_proj", hidden, _heads * _headDim, config.QkvBias);
        k_proj = Linear.Load(weights, $"{prefix}.k_proj", hidden, _kvHeads * _headDim, config.QkvBias);
        v_proj = Linear.Load(weights, $"{prefix}.v_proj", hidden, _kvHeads * _headDim, config.QkvBias);
        o_proj = Linear.Load(weights, $"{prefix}.o_proj", _heads * _headDim, hidden, config.OutputBias);
        RegisterComponents();
    }

    /// <summary>x [T, hidden] packed over the batch's sequences → [T, hidden].</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, ForwardBatch batch)
    {
        using var scope = NewDisposeScope();
        var tokens = x.shape[0];
        var q = RotaryEmbedding.Apply(q_proj.forward(x).view(tokens, _heads, _headDim), cos, sin);   // [T, H, hd]
        var k = RotaryEmbedding.Apply(k_proj.forward(x).view(tokens, _kvHeads, _headDim), cos, sin); // [T, KV, hd]
        var v = v_proj.forward(x).view(tokens, _kvHeads, _headDim);                                   // [T, KV, hd]

        var outputs = new Tensor[batch.SequenceCount];
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            var start = batch.Offsets[s];
            var count = batch.TokenCount(s);
            var past = batch.Caches[s].Length;
            var (keys, values) = batch.Caches[s].AppendKeyValues(
                _layer, k.narrow(0, start, count).transpose(0, 1), v.narrow(0, start, count).transpose(0, 1)); // [KV, past+n, hd]
            var query = q.narrow(0, start, count).transpose(0, 1);                                             // [H, n, hd]
            var attended = batch.Capture is null
                ? Attend(query, keys, values, past)
                : AttendEagerly(query, keys, values, past, batch.Capture, s);
            outputs[s] = attended.transpose(0, 1).reshape(count, _heads * _headDim);
        }
        var merged = outputs.Length == 1 ? outputs[0] : cat(outputs, 0);
        return o_proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>Causal attention of n queries at positions past..past+n-1 over past+n keys; KV heads shared by groups.</summary>
    private Tensor Attend(Tensor query, Tensor keys, Tensor values, int past)
    {
        var n = query.shape[1];
        var k = RepeatGroups(keys);
        var v = RepeatGroups(values);
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

    /// <summary>The same computation with explicit probabilities, recorded for analysis.</summary>
    private Tensor AttendEagerly(Tensor query, Tensor keys, Tensor values, int past, AttentionCapture capture, int sequence)
    {
        var n = query.shape[1];
        var scores = query.matmul(RepeatGroups(keys).transpose(1, 2)) / Math.Sqrt(_headDim); // [H, n, past+n]
        scores = scores.masked_fill(CausalMask(n, past, query.device).logical_not(), double.NegativeInfinity);
        var probabilities = nn.functional.softmax(scores, -1, ScalarType.Float32).to_type(query.dtype);
        capture.Record(_layer, sequence, probabilities);
        return probabilities.matmul(RepeatGroups(values));
    }

    /// <summary>True where query i (position past+i) may see key j: j ≤ past + i. Shape [n, past+n].</summary>
    private static Tensor CausalMask(long n, long past, Device device) =>
        arange(past + n, device: device).unsqueeze(0) <= (arange(n, device: device) + past).unsqueeze(1);

    /// <summary>[KV, T, hd] → [H, T, hd]: query head h uses KV head h / groupSize.</summary>
    private Tensor RepeatGroups(Tensor kv) => _heads == _kvHeads ? kv : kv.repeat_interleave(_heads / _kvHeads, 0);
}
