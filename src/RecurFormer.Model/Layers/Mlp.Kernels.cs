using System.Runtime.CompilerServices;
using RecurFormer.Model.Kernels;

namespace RecurFormer.Model.Layers;

/// <summary>The feed-forward block's CPU kernel path for a small decode batch.</summary>
public sealed partial class Mlp
{
    internal int Intermediate => _intermediate;

    internal bool KernelsSupport => gate_up_proj.Kernel.IsSupported && down_proj.Kernel.IsSupported;

    /// <summary>
    /// Thread <paramref name="thread"/>'s rows of gate and up (the same rows of each, so that silu(gate) · up needs
    /// no other thread), then its rows of down_proj added to the residual.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void Decode(DecodeStep step, int thread, float* normed)
    {
        var threads = step.Threads;
        var workspace = step.Workspace;
        var scratch = step.Scratch(thread);
        var hidden = workspace.Sizes.Hidden;
        var width = 2 * _intermediate;

        var input = gate_up_proj.Kernel.PrepareInput(normed, step.Batch, hidden, scratch.Input);
        // Shares in whole 16-float vectors: SiluMultiply's scalar tail rounds its exp differently, and the result must
        // not depend on how many threads split the rows.
        var (start, end) = threads.Share(thread, _intermediate, 16);
        gate_up_proj.Kernel.Compute(input, workspace.GateUp, width, start, end);
        gate_up_proj.Kernel.Compute(input, workspace.GateUp, width, _intermediate + start, _intermediate + end);
        for (var b = 0; b < step.Batch; b++)
        {
            var row = workspace.GateUp + (long)b * width;
            Kernel.SiluMultiply(row + start, row + _intermediate + start, end - start);
        }
        threads.Barrier();

        var activated = down_proj.Kernel.PrepareInput(workspace.GateUp, step.Batch, width, scratch.Input);
        var (first, last) = threads.Share(thread, hidden, 4);
        down_proj.Kernel.Compute(activated, workspace.Hidden, hidden, first, last, accumulate: true);
        threads.Barrier();
        step.Mark(thread, StepPart.FeedForward);
    }
}
