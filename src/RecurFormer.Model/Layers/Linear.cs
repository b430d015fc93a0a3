using RecurFormer.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>y = x Wᵀ + b, with W [out, in] read from the checkpoint (no random initialisation).</summary>
public sealed class Linear : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the state-dict names
    private readonly Parameter weight;
    private readonly Parameter? bias;
#pragma warning restore IDE1006

    public Linear(Tensor weight, Tensor? bias, string name = "linear") : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        this.bias = bias is null ? null : new Parameter(bias, requires_grad: false);
        RegisterComponents();
    }

    public static Linear Load(CheckpointWeights weights, string prefix, long inFeatures, long outFeatures, bool hasBias) =>
        new(weights.Load($"{prefix}.weight", outFeatures, inFeatures), hasBias ? weights.Load($"{prefix}.bias", outFeatures) : null, prefix);

    public Tensor Weight => weight;
    public Tensor? Bias => bias;

    public override Tensor forward(Tensor input) => nn.functional.linear(input, weight, bias);
}
