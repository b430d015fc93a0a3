using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// Mamba-1 selective state-space mixer (Gu &amp; Dao 2023), as transformers' MambaMixer: in_proj → depthwise causal
/// conv → SiLU → input-dependent (Δ, B, C) → selective scan → + D·x → gated by SiLU(z) → out_proj.
/// The convolution, the scan and the state are float32 whatever the compute dtype. Inference prefill on the CPU
/// runs the fused kernel (<see cref="MambaPrefillKernel"/>, a linear-time scan); training on the CPU the same scan
/// with its backward kernel (<see cref="SelectiveScanFunction"/>), all sequences of a batch at once; training elsewhere
/// (CUDA) <see cref="TensorScan"/>; inference prefill elsewhere a chunked closed form of the scan (one matrix product
/// per chunk of tokens); decode the one-step recurrence, batched over the
/// pool's state (or the decode kernels, MambaMixer.Kernels.cs).
/// </summary>
public sealed partial class MambaMixer : nn.Module
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

    /// <summary>x [T, input] packed over the batch → [T, output]; reads and writes each sequence's state in the cache pools.</summary>
    public Tensor Forward(Tensor x, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var projected = in_proj.forward(x).chunk(2, -1);
        var u = projected[0].to_type(ScalarType.Float32); // [T, dInner]
        var gate = projected[1];
        var a = -A_log.exp();                              // [dInner, dState], negative: the state decays

        var y = context.Prefilling.Length > 0 && IsWholeSequenceTraining(context)
            ? TrainingScan(u, gate.to_type(ScalarType.Float32), a, context)          // gated inside the scan
            : Recur(u, a, context) * nn.functional.silu(gate.to_type(ScalarType.Float32)); // [T, dInner] float32
        return out_proj.forward(y.to_type(x.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>u [T, dInner] → y [T, dInner]: decoding sequences in one batched step, prefill chunks one by one.</summary>
    private Tensor Recur(Tensor u, Tensor a, ForwardContext context)
    {
        if (context.Prefilling.Length == 0)
        {
            return DecodeStep(u, a, context);
        }
        if (context.Decoding.Length == 0)
        {
            return cat(context.Prefilling.Select(s => Prefill(u, a, context, s)).ToArray(), 0);
        }
        var output = empty_like(u);
        var rows = context.DecodeRows;
        output.index_copy_(0, rows, DecodeStep(u.index_select(0, rows), a, context));
        foreach (var s in context.Prefilling)
        {
            output.narrow(0, context.Batch.Offsets[s], context.Batch.TokenCount(s)).copy_(Prefill(u, a, context, s));
        }
        return output;
    }

    /// <summary>One token per decoding sequence: their states gathered from the pool, one recurrence step, scattered back.</summary>
    private Tensor DecodeStep(Tensor u, Tensor a, ForwardContext context)
    {
        var convPool = context.Storage.Conv(_layer)!;
        var ssmPool = context.Storage.Ssm(_layer)!;
        var slots = context.Slots;
        var conv = cat([convPool.index_select(0, slots), u.unsqueeze(2)], 2);             // [B, dInner, dConv]
        var xc = (conv * conv1d_weight.squeeze(1).unsqueeze(0)).sum(-1);                   // [B, dInner]
        if (conv1d_bias is not null)
        {
            xc = xc + conv1d_bias;
        }
        xc = nn.functional.silu(xc);

        var (dt, bInput, cOutput) = SelectiveParameters(xc);                               // [B,dI], [B,N], [B,N]
        var decay = (dt.unsqueeze(2) * a.unsqueeze(0)).exp();                              // [B, dI, N]
        var ssm = decay * ssmPool.index_select(0, slots) + dt.unsqueeze(2) * bInput.unsqueeze(1) * xc.unsqueeze(2);
        var y = (ssm * cOutput.unsqueeze(1)).sum(-1) + xc * D;                             // [B, dI]
        convPool.index_copy_(0, slots, conv.narrow(2, 1, Shape.ConvStateColumns).detach());
        ssmPool.index_copy_(0, slots, ssm.detach());
        return y;
    }

    /// <summary>The tokens of one sequence, continuing from its state (zero for a new sequence): → [n, dInner].</summary>
    private Tensor Prefill(Tensor u, Tensor a, ForwardContext context, int s)
    {
        var batch = context.Batch;
        if (PrefillsWithKernels(context))
        {
            return PrefillWithKernels(u.narrow(0, batch.Offsets[s], batch.TokenCount(s)), context, s);
        }
        var slot = batch.Caches[s].Slot;
        var convState = context.Storage.Conv(_layer)![slot];                              // [dI, dConv - 1]
        var ssmState = context.Storage.Ssm(_layer)![slot];                                // [dI, dState]
        var tokens = u.narrow(0, batch.Offsets[s], batch.TokenCount(s)).t();             // [dI, n]
        var window = cat([convState, tokens], 1);                                        // [dI, dConv - 1 + n]
        // Causal depthwise conv: output t sees the dConv-1 inputs before it (the state's, then the sequence's).
        var xc = nn.functional.conv1d(window.unsqueeze(0), conv1d_weight, conv1d_bias, groups: Shape.InnerSize)
            .squeeze(0).t();                                                             // [n, dI]
        xc = nn.functional.silu(xc);

        var (dt, bInput, cOutput) = SelectiveParameters(xc);
        convState.copy_(window.narrow(1, window.shape[1] - Shape.ConvStateColumns, Shape.ConvStateColumns).detach());
        if (SelectiveScanFunction.Supports(u.device))
        {
            // Training on the CPU: the linear-time scan kernels, forward and backward, as one autograd node.
            var final = empty_like(ssmState);
            var scanned = SelectiveScanFunction.Apply(xc, dt, bInput, cOutput, a, D, 1, ssmState, final, context.Batch.KernelThreads);
            ssmState.copy_(final);
            return scanned;
        }
        var (y, ssm) = ChunkedScan(xc, dt, bInput, cOutput, a, ssmState.clone()); // a copy: autograd may keep h_0, and the pool row changes below
        ssmState.copy_(ssm.detach());
        return y + xc * D;
    }

    /// <summary>
    /// A training forward (distillation) over sequences of equal length that all start empty: every sequence at once,
    /// instead of one prefill per sequence, and the states are not written back (a training batch is thrown away
    /// after its backward).
    /// </summary>
    private static bool IsWholeSequenceTraining(ForwardContext context)
    {
        var batch = context.Batch;
        return batch.Training && context.Decoding.Length == 0
            && batch.Caches.All(c => c.Length == 0) && batch.Tokens.All(t => t.Length == batch.Tokens[0].Length);
    }

    /// <summary>
    /// u, gate [B × L, dInner] of B empty sequences of L tokens → y · SiLU(gate) [B × L, dInner]: the CPU scan kernels
    /// with softplus and the gate inside, or <see cref="TensorScan"/>.
    /// </summary>
    private Tensor TrainingScan(Tensor u, Tensor gate, Tensor a, ForwardContext context)
    {
        var sequences = context.Batch.SequenceCount;
        var inner = Shape.InnerSize;
        var xc = CausalConvolution.Training(u.view(sequences, -1, inner), conv1d_weight, conv1d_bias, context.Batch.KernelThreads); // [B, L, dI]
        var (dtRaw, bInput, cOutput) = SelectiveParameters(xc, softplus: false, products: in_proj.Weight.dtype);
        return TensorScan.TrainingGated(xc, dtRaw, bInput, cOutput, a, D, gate.view(sequences, -1, inner), context.Batch.KernelThreads);
    }

    /// <summary>Δ = softplus(dt_proj(x_proj(x)[:rank])) (or what goes into the softplus), B and C: the input-dependent SSM parameters.</summary>
    /// <param name="products">
    /// dtype of x_proj's and dt_proj's products. Their weights, outputs and dt_proj's bias stay float32; a training
    /// forward of a bfloat16 copy (distillation's stage 2) runs the products in bfloat16, as Mamba's own training does
    /// under autocast: float32 they ran at a sixth of bfloat16's rate (docs/conversion.md, seventh round).
    /// </param>
    private (Tensor Dt, Tensor B, Tensor C) SelectiveParameters(Tensor xc, bool softplus = true, ScalarType products = ScalarType.Float32)
    {
        var full = products == ScalarType.Float32;
        var parameters = full ? x_proj.forward(xc) : Linear.Product(xc, x_proj.Weight, null, products);
        var rank = Shape.TimeStepRank;
        var state = Shape.StateSize;
        var dtInput = parameters.narrow(-1, 0, rank);
        var dt = full ? dt_proj.forward(dtInput) : Linear.Product(dtInput, dt_proj.Weight, null, products) + dt_proj.Bias!;
        return (softplus ? nn.functional.softplus(dt) : dt, parameters.narrow(-1, rank, state), parameters.narrow(-1, rank + state, state));
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
        return (outputs.Count == 1 ? outputs[0] : cat(outputs, 0), h);
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

}
