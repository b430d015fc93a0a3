using RecurFormer.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>Token embedding table [vocab, hidden]; also the LM head when embeddings are tied.</summary>
public sealed class Embedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Parameter weight;
#pragma warning restore IDE1006

    public Embedding(Tensor weight, string name = "embedding") : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        RegisterComponents();
    }

    public static Embedding Load(CheckpointWeights weights, string prefix, long vocab, long hidden) =>
        new(weights.Load($"{prefix}.weight", vocab, hidden), prefix);

    public Tensor Weight => weight;

    /// <summary>token ids [T] → [T, hidden].</summary>
    public override Tensor forward(Tensor tokens) => weight.index_select(0, tokens);
}
