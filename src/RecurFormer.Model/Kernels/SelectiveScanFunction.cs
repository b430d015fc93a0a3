using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// The selective scan as one differentiable operation for training on the CPU: forward is <see cref="SelectiveScan.Forward"/>,
/// backward <see cref="SelectiveScan.Backward"/>, both linear in the sequence length and run over raw memory, so
/// autograd records one node per layer instead of a dozen per token (the step-by-step tensor form) or the
/// [channels, state, c, c] decay matrices of the chunked closed form.
/// </summary>
public sealed class SelectiveScanFunction : SingleTensorFunction<SelectiveScanFunction>
{
    public override string Name => "SelectiveScan";

    /// <summary>Whether the kernels run for tensors on <paramref name="device"/>: the CPU, with 512-bit vectors in hardware.</summary>
    public static bool Supports(Device device) => device.type == DeviceType.CPU && Kernel.IsAccelerated;

    /// <summary>
    /// y [S × L, dInner] of <paramref name="sequences"/> packed sequences of equal length L, each from
    /// <paramref name="initialState"/> ([dInner, dState], not differentiated; zeros when null). x, Δ [S × L, dInner];
    /// b, c [S × L, dState]; a [dInner, dState] (negative); d [dInner]; float32 on the CPU. When
    /// <paramref name="finalState"/> is given (one sequence only) it receives h_L.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d, int sequences = 1, Tensor? initialState = null, Tensor? finalState = null, KernelThreads? threads = null)
    {
        if (finalState is not null && sequences != 1)
        {
            throw new ArgumentException("a final state is returned for one sequence only");
        }
        // Non-tensor arguments after the tensors: autograd gives gradients to the tensors only.
        // The initial state is kept as values: backward runs after the caller's dispose scopes have freed its tensors.
        var h0 = initialState?.detach().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        return apply(x, dt, b, c, a, d, new Options(sequences, h0, finalState, threads ?? KernelThreads.ForThisProcess, Fused: false));
    }

    /// <summary>
    /// The training scan with its element-wise neighbours inside the kernels: softplus(<paramref name="dtRaw"/>) → Δ,
    /// and y · SiLU(<paramref name="gate"/>) out ([S × L, dInner] each), every sequence from a zero state. Saves the
    /// half-dozen full-size libtorch operations forward and backward that these cost each layer.
    /// </summary>
    public static Tensor ApplyFused(Tensor x, Tensor dtRaw, Tensor b, Tensor c, Tensor a, Tensor d, Tensor gate, int sequences, KernelThreads? threads = null)
    {
        // The kernels read raw float32 memory: another dtype would be read past the end of its buffer.
        if (new[] { x, dtRaw, b, c, a, d, gate }.Any(t => t.dtype != ScalarType.Float32))
        {
            throw new ArgumentException("the fused scan takes float32 tensors");
        }
        return apply(x, dtRaw, b, c, a, d, gate, new Options(sequences, null, null, threads ?? KernelThreads.ForThisProcess, Fused: true));
    }

    private sealed record Options(int Sequences, float[]? InitialState, Tensor? FinalState, KernelThreads Threads, bool Fused)
    {
        public Tensor? InitialTensor(Tensor a) => InitialState is null ? null : tensor(InitialState).view(a.shape[0], a.shape[1]);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, dt, b, c, a, d) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3], (Tensor)vars[4], (Tensor)vars[5]);
        var options = (Options)vars[^1];
        var gate = options.Fused ? (Tensor)vars[6] : null;
        ctx.save_for_backward(gate is null ? [x, dt, b, c, a, d] : [x, dt, b, c, a, d, gate]);
        ctx.save_data("options", options);
        var length = x.shape[0] / options.Sequences;
        var outputs = new Tensor[options.Sequences];
        for (var s = 0; s < options.Sequences; s++)
        {
            var state = options.InitialTensor(a) ?? zeros(a.shape[0], a.shape[1]);
            outputs[s] = SelectiveScan.Forward(x.narrow(0, s * length, length), dt.narrow(0, s * length, length), b.narrow(0, s * length, length),
                c.narrow(0, s * length, length), a, d, state, options.Threads, gate?.narrow(0, s * length, length));
            options.FinalState?.copy_(state);
        }
        return outputs.Length == 1 ? outputs[0] : cat(outputs, 0);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (x, dt, b, c, a, d) = (saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]);
        var options = (Options)ctx.get_data("options");
        var gate = options.Fused ? saved[6] : null;
        var length = x.shape[0] / options.Sequences;
        var parts = new List<SelectiveScan.ScanGradients>(options.Sequences);
        var initial = options.InitialTensor(a);
        for (var s = 0; s < options.Sequences; s++)
        {
            parts.Add(SelectiveScan.Backward(x.narrow(0, s * length, length), dt.narrow(0, s * length, length), b.narrow(0, s * length, length),
                c.narrow(0, s * length, length), a, d, initial, grad_output.narrow(0, s * length, length), options.Threads,
                gate?.narrow(0, s * length, length)));
        }
        List<Tensor> gradients = parts.Count == 1
            ? [parts[0].X, parts[0].Dt, parts[0].B, parts[0].C, parts[0].A, parts[0].D]
            : [cat(parts.Select(p => p.X).ToArray(), 0), cat(parts.Select(p => p.Dt).ToArray(), 0), cat(parts.Select(p => p.B).ToArray(), 0),
                cat(parts.Select(p => p.C).ToArray(), 0), stack(parts.Select(p => p.A).ToArray()).sum(dim: 0), stack(parts.Select(p => p.D).ToArray()).sum(dim: 0)];
        if (gate is not null)
        {
            gradients.Add(parts.Count == 1 ? parts[0].Gate! : cat(parts.Select(p => p.Gate!).ToArray(), 0));
        }
        gradients.Add(null!); // the options
        return gradients;
    }
}
