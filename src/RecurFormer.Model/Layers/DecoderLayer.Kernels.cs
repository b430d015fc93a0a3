using System.Runtime.CompilerServices;
using RecurFormer.Model.Kernels;

namespace RecurFormer.Model.Layers;

/// <summary>The decoder block's CPU kernel path for a small decode batch: the same pre-norm residual structure.</summary>
public sealed partial class DecoderLayer
{
    internal Attention Attention => self_attn;
    internal Mlp Mlp => mlp;

    internal bool KernelsSupport => input_layernorm.KernelsSupport && post_attention_layernorm.KernelsSupport && self_attn.KernelsSupport && mlp.KernelsSupport;

    /// <summary>Every thread runs this; each normalises the residual into its own scratch (a few hundred floats) rather than wait for one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal unsafe void Decode(DecodeStep step, int thread)
    {
        var workspace = step.Workspace;
        var normed = step.Scratch(thread).Normed;
        var hidden = workspace.Sizes.Hidden;
        input_layernorm.Normalize(workspace.Hidden, normed, step.Batch, hidden);
        step.Mark(thread, StepPart.Norms);
        self_attn.Decode(step, thread, normed);
        post_attention_layernorm.Normalize(workspace.Hidden, normed, step.Batch, hidden);
        step.Mark(thread, StepPart.Norms);
        mlp.Decode(step, thread, normed);
    }
}
