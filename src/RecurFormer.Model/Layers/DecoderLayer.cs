using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x)).</summary>
public sealed partial class DecoderLayer : nn.Module
{
#pragma warning disable IDE1006
    private readonly RmsNorm input_layernorm;
    private readonly Attention self_attn;
    private readonly RmsNorm post_attention_layernorm;
    private readonly Mlp mlp;
#pragma warning restore IDE1006

    public DecoderLayer(TransformerConfig config, CheckpointWeights weights, string prefix, int layer) : base(prefix)
    {
        input_layernorm = RmsNorm.Load(weights, $"{prefix}.input_layernorm", config.HiddenSize, config.RmsNormEps);
        self_attn = new Attention(config, weights, $"{prefix}.self_attn", layer);
        post_attention_layernorm = RmsNorm.Load(weights, $"{prefix}.post_attention_layernorm", config.HiddenSize, config.RmsNormEps);
        mlp = new Mlp(config, weights, $"{prefix}.mlp");
        RegisterComponents();
    }

    /// <summary>The attention block (<c>self_attn</c>): kept heads, the Mamba mixer of replaced ones, o_proj.</summary>
    public Attention SelfAttention => self_attn;

    public Tensor Forward(Tensor x, ForwardContext context)
    {
        using var scope = NewDisposeScope();
        var h = AttentionBlock(x, context);
        return (h + mlp.Forward(post_attention_layernorm.forward(h), context.Batch.KernelThreads)).MoveToOuterDisposeScope();
    }

    /// <summary>The first half of the block, x + attn(norm(x)).</summary>
    private Tensor AttentionBlock(Tensor x, ForwardContext context) => x + self_attn.Forward(input_layernorm.forward(x), context);

    /// <summary>The attention's head outputs of norm(x), before o_proj: where a forward that stops at this layer stops.</summary>
    public Tensor AttentionHeads(Tensor x, ForwardContext context) => self_attn.RecordedHeads(input_layernorm.forward(x), context);
}
