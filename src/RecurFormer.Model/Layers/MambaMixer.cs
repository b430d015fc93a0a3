using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Caching;
using RecurFormer.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>Shape of a Mamba-1 mixer, independent of where it sits (a Mamba model, or replaced attention heads).</summary>
public sealed record MambaMixerShape(int InputSize, int OutputSize, int InnerSize, int StateSize, int ConvKernel, int TimeStepRank, bool UseBias, bool UseConvBias)
{
    /// <summary>Bytes of one sequence's recurrent state (conv + SSM), float32.</summary>
    public long StateBytes => 4L * InnerSize * (ConvKernel + StateSize);
}

/// <summary>
/// Mamba-1 selective state-space mixer (Gu &amp; Dao 2023), as transformers' MambaMixer: in_proj → depthwise causal
/// conv → SiLU → input-dependent (Δ, B, C) → selective scan → + D·x → gated by SiLU(z) → out_proj.
/// The convolution, the scan and the state are float32 whatever the compute dtype. Prefill uses a chunked closed
/// form of the scan (one matrix product per chunk of tokens); decode uses the one-step recurrence, batched.
/// </summary>
public sealed class MambaMixer : nn.Module
{
#pragma warning disable IDE1006
    private readonly Linear in_proj;
    private readonly Parameter conv1d_weight; // [dInner, 1, dConv]
    private readonly Parameter? conv1d_bias;
    private readonly Linear x_proj;
    private readonly Linear dt_proj;
    private readonly Parameter A_log;          // [dInner, dState]
    private readonly Parameter D;              // [dInner]
    private readonly Linear out_proj;
#pragma warning restore IDE1006
    private readonly int _layer;

    public MambaMixerShape Shape { get; }

    public MambaMixer(MambaMixerShape shape, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        Shape = shape;
        _layer = layer;
        var f32 = ScalarType.Float32;
        int inner = shape.InnerSize, state = shape.StateSize, rank = shape.TimeStepRank;
        in_proj = Linear.Load(weights, $"{prefix}.in_proj", shape.InputSize, 2 * inner, shape.UseBias);
        conv1d_weight = new Parameter(weights.Load($"{prefix}.conv1d.weight", f32, inner, 1, shape.ConvKernel), requires_grad: false);
        conv1d_bias = shape.UseConvBias ? new Parameter(weights.Load($"{prefix}.conv1d.bias", f32, inner), requires_grad: false) : null;
        x_proj = new Linear(weights.Load($"{prefix}.x_proj.weight", f32, rank + 2 * state, inner), null, $"{prefix}.x_proj");
        dt_proj = new Linear(weights.Load($"{prefix}.dt_proj.weight", f32, inner, rank), weights.Load($"{prefix}.dt_proj.bias", f32, inner), $"{prefix}.dt_proj");
        A_log = new Parameter(weights.Load($"{prefix}.A_log", f32, inner, state), requires_grad: false);
        D = new Parameter(weights.Load($"{prefix}.D", f32, inner), requires_grad: false);
        out_proj = Linear.Load(weights, $"{prefix}.out_proj", inner, shape.OutputSize, shape.UseBias);
        RegisterComponents();
    }

    /// <summary>x [T, input] packed over the batch → [T, output]; reads and writes each sequence's state.</summary>
    public Tensor Forward(Tensor x, ForwardBatch batch)
    {
        using var scope = NewDisposeScope();
        var projected = in_proj.forward(x).chunk(2, -1);
        var u = projected[0].to_type(ScalarType.Float32); // [T, dInner]
        var gate = projected[1];
        var a = -A_log.exp();                              // [dInner, dState], negative: the state decays

        var y = batch.IsDecode ? DecodeStep(u, a, batch) : Prefill(u, a, batch); // [T, dInner] float32
        y = (y * nn.functional.silu(gate.to_type(ScalarType.Float32))).to_type(x.dtype);
        return out_proj.forward(y).MoveToOuterDisposeScope();
    }

    /// <summary>One token per sequence: states stacked into a batch, one recurrence step, states written back.</summary>
    private Tensor DecodeStep(Tensor u, Tensor a, ForwardBatch batch)
    {
        var states = batch.Caches.Select(c => c.GetMambaState(_layer)).ToArray();
        var conv = stack(states.Select(s => s?.Conv ?? EmptyConv(u.device)).ToArray());     // [B, dInner, dConv]
        var ssm = stack(states.Select(s => s?.Ssm ?? EmptySsm(u.device)).ToArray());        // [B, dInner, dState]

        conv = cat([conv.narrow(2, 1, Shape.ConvKernel - 1), u.unsqueeze(2)], 2);
        var xc = (conv * conv1d_weight.squeeze(1).unsqueeze(0)).sum(-1);                   // [B, dInner]
        if (conv1d_bias is not null)
        {
            xc = xc + conv1d_bias;
        }
        xc = nn.functional.silu(xc);

        var (dt, bInput, cOutput) = SelectiveParameters(xc);                               // [B,dI], [B,N], [B,N]
        var decay = (dt.unsqueeze(2) * a.unsqueeze(0)).exp();                              // [B, dI, N]
        ssm = decay * ssm + dt.unsqueeze(2) * bInput.unsqueeze(1) * xc.unsqueeze(2);
        var y = (ssm * cOutput.unsqueeze(1)).sum(-1) + xc * D;                             // [B, dI]

        for (var s = 0; s < batch.SequenceCount; s++)
        {
            batch.Caches[s].SetMambaState(_layer, new MambaState(conv[s].clone(), ssm[s].clone()));
        }
        return y;
    }

    /// <summary>Any number of tokens per sequence, each sequence continuing from its state.</summary>
    private Tensor Prefill(Tensor u, Tensor a, ForwardBatch batch)
    {
        var outputs = new Tensor[batch.SequenceCount];
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            var cache = batch.Caches[s];
            var state = cache.GetMambaState(_layer);
            var tokens = u.narrow(0, batch.Offsets[s], batch.TokenCount(s)).t();             // [dI, n]
            var history = state?.Conv ?? EmptyConv(u.device);                                // [dI, dConv]
            var window = cat([history, tokens], 1);                                          // [dI, dConv + n]
            // Causal depthwise conv: output t sees the dConv-1 inputs before it (zeros at the start).
            var xc = nn.functional.conv1d(window.narrow(1, 1, window.shape[1] - 1).unsqueeze(0), conv1d_weight, conv1d_bias, groups: Shape.InnerSize)
                .squeeze(0).t();                                                             // [n, dI]
            xc = nn.functional.silu(xc);

            var (dt, bInput, cOutput) = SelectiveParameters(xc);
            var (y, ssm) = ChunkedScan(xc, dt, bInput, cOutput, a, state?.Ssm ?? EmptySsm(u.device));
            outputs[s] = y + xc * D;
            var conv = window.narrow(1, window.shape[1] - Shape.ConvKernel, Shape.ConvKernel).clone();
            cache.SetMambaState(_layer, new MambaState(conv, ssm));
        }
        return outputs.Length == 1 ? outputs[0] : cat(outputs, 0);
    }

    /// <summary>Δ = softplus(dt_proj(x_proj(x)[:rank])), B and C: the input-dependent SSM parameters.</summary>
    private (Tensor Dt, Tensor B, Tensor C) SelectiveParameters(Tensor xc)
    {
        var parameters = x_proj.forward(xc);
        var rank = Shape.TimeStepRank;
        var state = Shape.StateSize;
        var dt = nn.functional.softplus(dt_proj.forward(parameters.narrow(-1, 0, rank)));
        return (dt, parameters.narrow(-1, rank, state), parameters.narrow(-1, rank + state, state));
    }

    /// <summary>
    /// The selective scan h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = C_t · h_t, over chunks of c tokens. Within a
    /// chunk, with S_t = Σ_{j≤t} Δ_j A (cumulative log-decay), h_t = exp(S_t) h_0 + Σ_{j≤t} exp(S_t − S_j) Δ_j B_j x_j:
    /// one [c × c] matrix product per (channel, state) pair instead of c sequential steps.
    /// </summary>
    private (Tensor Y, Tensor State) ChunkedScan(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor h)
    {
        var n = x.shape[0];
        var chunk = ChunkLength();
        var outputs = new List<Tensor>();
        for (long start = 0; start < n; start += chunk)
        {
            // Each chunk's [dI, N, c, c] intermediates are freed as soon as the chunk is done (only y and h leave it).
            using var chunkScope = NewDisposeScope();
            var length = Math.Min(chunk, n - start);
            var dtc = dt.narrow(0, start, length);                                                        // [c, dI]
            var logDecay = (dtc.unsqueeze(2) * a.unsqueeze(0)).permute(1, 2, 0);                          // [dI, N, c]
            var cumulative = logDecay.cumsum(2);                                                          // S_t
            var input = (dtc.unsqueeze(2) * b.narrow(0, start, length).unsqueeze(1) * x.narrow(0, start, length).unsqueeze(2))
                .permute(1, 2, 0);                                                                        // [dI, N, c]
            var difference = cumulative.unsqueeze(3) - cumulative.unsqueeze(2);                           // [dI, N, t, j] = S_t − S_j
            var future = ones(length, length, dtype: ScalarType.Bool, device: x.device).triu(1);          // j > t
            var weights = difference.masked_fill(future, double.NegativeInfinity).exp();
            var states = weights.matmul(input.unsqueeze(3)).squeeze(3) + cumulative.exp() * h.unsqueeze(2); // [dI, N, c]
            outputs.Add((states * c.narrow(0, start, length).t().unsqueeze(0)).sum(1).t().MoveToOuterDisposeScope()); // [c, dI]
            h = states.select(2, length - 1).MoveToOuterDisposeScope();
        }
        return (outputs.Count == 1 ? outputs[0] : cat(outputs, 0), h.clone());
    }

    /// <summary>
    /// Chunk length that keeps the [dI, N, c, c] decay matrix near 2M elements. The work per token grows with c (the
    /// matrix is c × c for c tokens), the number of chunk iterations with 1/c: on a CPU, c ≈ 16–32 is the balance.
    /// </summary>
    private long ChunkLength()
    {
        var perPair = (long)Shape.InnerSize * Shape.StateSize;
        return Math.Clamp((long)Math.Sqrt(2_000_000.0 / perPair), 8, 64);
    }

    private Tensor EmptyConv(Device device) => zeros(Shape.InnerSize, Shape.ConvKernel, dtype: ScalarType.Float32, device: device);
    private Tensor EmptySsm(Device device) => zeros(Shape.InnerSize, Shape.StateSize, dtype: ScalarType.Float32, device: device);
}
