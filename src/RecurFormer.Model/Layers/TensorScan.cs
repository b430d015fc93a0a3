using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// The selective scan h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_t, y_t = C_t · h_t written with tensor operations, for
/// training on devices without the CPU kernels (CUDA). All sequences of a batch advance together; the decays and
/// inputs of every step are computed in two big element-wise operations and split with <c>unbind</c> (whose backward
/// is one <c>stack</c>, where <c>select</c> would add a full-size zero tensor per step), so each time step costs one
/// fused multiply-add forward and a few kernels backward. Memory: the [B, L, dI, N] decays, inputs and states.
/// </summary>
public static class TensorScan
{
    /// <summary>
    /// The training scan on whichever device the tensors are: the CPU kernels (<see cref="SelectiveScanFunction"/>)
    /// where they run, <see cref="Run"/> elsewhere. x, Δ [B, L, dI]; b, c [B, L, N]; a [dI, N]; d [dI]; every sequence
    /// from a zero state. → y [B × L, dI] with the D·x skip.
    /// </summary>
    public static Tensor Training(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d, KernelThreads? threads = null)
    {
        var (sequences, inner, state) = ((int)x.shape[0], x.shape[2], b.shape[2]);
        return SelectiveScanFunction.Supports(x.device)
            ? SelectiveScanFunction.Apply(x.reshape(-1, inner), dt.reshape(-1, inner), b.reshape(-1, state), c.reshape(-1, state), a, d, sequences, threads: threads)
            : (Run(x, dt, b, c, a).Y + x * d).reshape(-1, inner);
    }

    /// <summary>
    /// <see cref="Training"/> with Δ = softplus(<paramref name="dtRaw"/>) and the output gated, y · SiLU(<paramref name="gate"/>):
    /// on the CPU inside the scan kernels (<see cref="SelectiveScanFunction.ApplyFused"/>), elsewhere as tensor
    /// operations. x, dtRaw, gate [B, L, dI]; b, c [B, L, N]. → [B × L, dI].
    /// </summary>
    public static Tensor TrainingGated(Tensor x, Tensor dtRaw, Tensor b, Tensor c, Tensor a, Tensor d, Tensor gate, KernelThreads? threads = null)
    {
        var (sequences, inner, state) = ((int)x.shape[0], x.shape[2], b.shape[2]);
        return SelectiveScanFunction.Supports(x.device)
            ? SelectiveScanFunction.ApplyFused(x.reshape(-1, inner), dtRaw.reshape(-1, inner), b.reshape(-1, state), c.reshape(-1, state), a, d,
                gate.reshape(-1, inner), sequences, threads)
            : Training(x, nn.functional.softplus(dtRaw), b, c, a, d, threads) * nn.functional.silu(gate.reshape(-1, inner));
    }

    /// <summary>
    /// x, Δ [B, L, dI]; b, c [B, L, N]; a [dI, N] (negative); every sequence from a zero state.
    /// → y [B, L, dI] without the D·x skip, and the last state [B, dI, N].
    /// </summary>
    public static (Tensor Y, Tensor LastState) Run(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a)
    {
        var length = (int)x.shape[1];
        var decays = (dt.unsqueeze(3) * a).exp().unbind(1);                   // L × [B, dI, N]
        var inputs = ((dt * x).unsqueeze(3) * b.unsqueeze(2)).unbind(1);      // L × [B, dI, N]
        var states = new Tensor[length];
        var h = inputs[0];
        states[0] = h;
        for (var t = 1; t < length; t++)
        {
            h = inputs[t].addcmul(decays[t], h, 1);
            states[t] = h;
        }
        var y = stack(states, 1).matmul(c.unsqueeze(3)).squeeze(3);         // [B, L, dI]
        return (y, h);
    }
}
