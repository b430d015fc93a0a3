using System.Runtime.CompilerServices;
using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// The mixer's CPU kernel path for a small decode batch: the one-step recurrence of <see cref="DecodeStep(Tensor, Tensor, CausalLM.ForwardContext)"/>
/// over the pool's state, in four phases that the attention block interleaves with its own (see Attention.Kernels.cs).
/// </summary>
public sealed partial class MambaMixer
{
    private const int ChannelAlignment = 16;
    private KernelParameters? _kernel;

    /// <summary>The small float32 parameters, resolved once (they keep their storage, as the weights do).</summary>
    private sealed unsafe class KernelParameters(float* convWeight, float* convBias, float* aLog, float* d, float* dtWeight, float* dtBias)
    {
        public readonly float* ConvWeight = convWeight, ConvBias = convBias, ALog = aLog, D = d, DtWeight = dtWeight, DtBias = dtBias;
    }

    private unsafe KernelParameters Parameters => _kernel ??= new KernelParameters(
        TensorMemory.Pointer<float>(conv1d_weight), conv1d_bias is null ? null : TensorMemory.Pointer<float>(conv1d_bias),
        TensorMemory.Pointer<float>(A_log), TensorMemory.Pointer<float>(D), TensorMemory.Pointer<float>(dt_proj.Weight), TensorMemory.Pointer<float>(dt_proj.Bias!));

    internal bool KernelsSupport =>
        in_proj.Kernel.IsSupported && x_proj.Kernel.IsSupported && dt_proj.Kernel.IsSupported && out_proj.Kernel.IsSupported && dt_proj.Bias is not null
        && new Tensor[] { conv1d_weight, A_log, D, dt_proj.Weight }.Concat(conv1d_bias is null ? [] : [conv1d_bias]).All(p => p.dtype == ScalarType.Float32 && Kernel.Supports(p));

    /// <summary>Inference prefill on the CPU takes the fused kernel (training keeps autograd's libtorch path).</summary>
    private bool PrefillsWithKernels(CausalLM.ForwardContext context) =>
        !context.Batch.Training && context.Storage.KernelsSupport && Kernel.IsAccelerated && KernelsSupport;

    /// <summary>One sequence's tokens u [n, dInner] (float32) from its slot's state: → y [n, dInner] before the gate.</summary>
    private unsafe Tensor PrefillWithKernels(Tensor u, CausalLM.ForwardContext context, int sequence)
    {
        var slot = context.Batch.Caches[sequence].Slot;
        var tokens = (int)u.shape[0];
        var x = u.contiguous();
        var xc = empty(tokens, Shape.InnerSize, ScalarType.Float32);
        var selective = empty(tokens, Shape.TimeStepRank + 2 * Shape.StateSize, ScalarType.Float32);
        var y = empty(tokens, Shape.InnerSize, ScalarType.Float32);
        var p = Parameters;
        var pools = context.Storage.Memory(_layer);
        var parameters = new MambaPrefillKernel.Parameters(p.ConvWeight, p.ConvBias, x_proj.Kernel, p.DtWeight, p.DtBias, p.ALog, p.D,
            Shape.InnerSize, Shape.ConvKernel, Shape.TimeStepRank, Shape.StateSize);
        MambaPrefillKernel.Run(context.Batch.KernelThreads, parameters, tokens, TensorMemory.Pointer<float>(x),
            (float*)pools.Conv.Data + (long)slot * Shape.InnerSize * Shape.ConvStateColumns, (float*)pools.Ssm.Data + (long)slot * Shape.InnerSize * Shape.StateSize,
            TensorMemory.Pointer<float>(xc), TensorMemory.Pointer<float>(selective), TensorMemory.Pointer<float>(y));
        return y;
    }

    /// <summary>Phase 1: this thread's rows of in_proj (x and the gate z) from the normalised input.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void DecodeInput(DecodeStep step, int thread, float* normed, KernelInput? prepared)
    {
        var rows = 2 * Shape.InnerSize;
        var input = prepared is { } ready && ready.Reordered == in_proj.Kernel.WantsReorderedInput
            ? ready
            : in_proj.Kernel.PrepareInput(normed, step.Batch, Shape.InputSize, step.Scratch(thread).Input);
        var (start, end) = step.Threads.Share(thread, rows, 4);
        in_proj.Kernel.Compute(input, step.Workspace.MambaXz, rows, start, end);
    }

    /// <summary>Phase 2: this thread's channels of the causal convolution (the state's inputs, then the new one) and SiLU; the state shifts by the new input.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void DecodeConvolution(DecodeStep step, int thread)
    {
        var p = Parameters;
        int inner = Shape.InnerSize, kernel = Shape.ConvKernel, held = Shape.ConvStateColumns;
        var conv = (float*)step.Storage.Memory(_layer).Conv.Data;
        var (start, end) = step.Threads.Share(thread, inner, ChannelAlignment);
        for (var b = 0; b < step.Batch; b++)
        {
            var u = step.Workspace.MambaXz + (long)b * 2 * inner;
            var xc = step.Workspace.MambaXc + (long)b * inner;
            var slot = conv + (long)step.Slots[b] * inner * held;
            for (var d = start; d < end; d++)
            {
                var state = slot + (long)d * held;
                var weights = p.ConvWeight + (long)d * kernel;
                var sum = p.ConvBias is null ? 0f : p.ConvBias[d];
                for (var k = 0; k < held; k++)
                {
                    sum += weights[k] * state[k];
                }
                sum += weights[kernel - 1] * u[d];
                if (held > 0)
                {
                    for (var k = 0; k < held - 1; k++)
                    {
                        state[k] = state[k + 1];
                    }
                    state[held - 1] = u[d];
                }
                xc[d] = Kernel.Silu(sum);
            }
        }
    }

    /// <summary>
    /// Phases 3–4: x_proj (Δ rank, B, C), then per channel Δ = softplus(dt_proj), the state update, y and the gate;
    /// then out_proj, each thread scattering its output rows to the heads they replace
    /// (<paramref name="outputHeads"/>: the original index of each head the mixer outputs, in order); rows from
    /// <paramref name="placedColumns"/> on are added to window-Mamba heads instead of replacing them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void DecodeRecurrence(DecodeStep step, int thread, int[] outputHeads, int placedColumns, int headDim, int headColumns)
    {
        var threads = step.Threads;
        var workspace = step.Workspace;
        var scratch = step.Scratch(thread);
        var p = Parameters;
        int inner = Shape.InnerSize, state = Shape.StateSize, rank = Shape.TimeStepRank, parameters = rank + 2 * state;

        var xc = x_proj.Kernel.PrepareInput(workspace.MambaXc, step.Batch, inner, scratch.Input);
        var (first, last) = threads.Share(thread, parameters, 4);
        x_proj.Kernel.Compute(xc, workspace.MambaParameters, parameters, first, last);
        threads.Barrier();

        var ssm = (float*)step.Storage.Memory(_layer).Ssm.Data;
        var (start, end) = threads.Share(thread, inner, ChannelAlignment);
        for (var b = 0; b < step.Batch; b++)
        {
            var selective = workspace.MambaParameters + (long)b * parameters;
            var bInput = selective + rank;
            var cOutput = bInput + state;
            var x = workspace.MambaXc + (long)b * inner;
            var z = workspace.MambaXz + (long)b * 2 * inner + inner;
            var y = workspace.MambaY + (long)b * inner;
            var slot = ssm + (long)step.Slots[b] * inner * state;
            for (var d = start; d < end; d++)
            {
                var delta = Kernel.Softplus(Kernel.Dot(p.DtWeight + (long)d * rank, selective, rank) + p.DtBias[d]);
                var h = slot + (long)d * state;
                var logA = p.ALog + (long)d * state;
                var drive = delta * x[d];
                y[d] = (p.D[d] * x[d] + Kernel.StateStep(h, logA, bInput, cOutput, delta, drive, state)) * Kernel.Silu(z[d]);
            }
        }
        threads.Barrier();

        var outputs = Shape.OutputSize;
        var gated = out_proj.Kernel.PrepareInput(workspace.MambaY, step.Batch, inner, scratch.Input);
        var (from, to) = threads.Share(thread, outputs, 4);
        out_proj.Kernel.Compute(gated, workspace.MambaOut, outputs, from, to);
        for (var b = 0; b < step.Batch; b++)
        {
            var source = workspace.MambaOut + (long)b * outputs;
            var target = workspace.Heads + (long)b * headColumns;
            for (var r = from; r < to; r++)
            {
                var column = outputHeads[r / headDim] * headDim + r % headDim;
                // Columns past the placed ones belong to window-Mamba heads, whose attention output is already there.
                target[column] = r < placedColumns ? source[r] : target[column] + source[r];
            }
        }
    }
}
