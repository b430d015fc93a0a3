using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// y = x Wᵀ + b, with W [out, in] read from the checkpoint (no random initialisation). Several checkpoint
/// projections that read the same input can be fused at load time into one weight (q/k/v, gate/up): one matrix
/// product instead of several. The checkpoint keeps its own names; <see cref="CheckpointTensors"/> splits them back.
/// </summary>
public sealed class Linear : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the state-dict names
    private readonly Parameter weight;
    private readonly Parameter? bias;
#pragma warning restore IDE1006
    private readonly IReadOnlyList<FusedPart> _parts;

    /// <summary>A checkpoint projection inside a fused weight: its rows, in its own order, are these rows of the fused weight.</summary>
    public sealed record FusedPart(string Prefix, long[] Rows);

    public Linear(Tensor weight, Tensor? bias, string name = "linear") : this(weight, bias, name, [new FusedPart(name, [])])
    {
    }

    private Linear(Tensor weight, Tensor? bias, string name, IReadOnlyList<FusedPart> parts) : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        this.bias = bias is null ? null : new Parameter(bias, requires_grad: false);
        _parts = parts;
        Kernel = new MatVec(this.weight, this.bias);
        RegisterComponents();
    }

    public static Linear Load(CheckpointWeights weights, string prefix, long inFeatures, long outFeatures, bool hasBias) =>
        new(weights.Load($"{prefix}.weight", outFeatures, inFeatures), hasBias ? weights.Load($"{prefix}.bias", outFeatures) : null, prefix);

    /// <summary>
    /// One weight from several checkpoint projections of the same input: part i's row r becomes row
    /// <c>Rows[r]</c> of the fused weight (so parts may be concatenated, or interleaved to suit the kernels).
    /// </summary>
    public static Linear LoadFused(CheckpointWeights weights, string name, long inFeatures, bool hasBias, IReadOnlyList<FusedPart> parts)
    {
        var outFeatures = parts.Sum(p => (long)p.Rows.Length);
        using var scope = NewDisposeScope();
        var fused = empty(outFeatures, inFeatures, weights.Target.DType, weights.Target.Device);
        var fusedBias = hasBias ? empty(outFeatures, weights.Target.DType, weights.Target.Device) : null;
        foreach (var part in parts)
        {
            var rows = tensor(part.Rows, device: weights.Target.Device);
            fused.index_copy_(0, rows, weights.Load($"{part.Prefix}.weight", part.Rows.Length, inFeatures));
            fusedBias?.index_copy_(0, rows, weights.Load($"{part.Prefix}.bias", part.Rows.Length));
        }
        return new Linear(fused.DetachFromDisposeScope(), fusedBias?.DetachFromDisposeScope(), name, parts);
    }

    public Tensor Weight => weight;
    public Tensor? Bias => bias;
    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];

    /// <summary>The hand-written CPU path (small batches) over the same weight.</summary>
    internal MatVec Kernel { get; }

    public override Tensor forward(Tensor input) => nn.functional.linear(input, weight, bias);

    /// <summary>
    /// x Wᵀ + b with the product computed in <paramref name="dtype"/>, forward and (under autograd) backward, → float32:
    /// how training runs its products in bfloat16 on float32 weights, whose gradients then arrive in float32.
    /// </summary>
    public static Tensor Product(Tensor x, Tensor weight, Tensor? bias, ScalarType dtype) => dtype == ScalarType.Float32
        ? nn.functional.linear(x.to_type(ScalarType.Float32), weight, bias)
        : nn.functional.linear(x.to_type(dtype), weight.to_type(dtype), bias?.to_type(dtype)).to_type(ScalarType.Float32);

    /// <summary>The weights under their checkpoint names (fused weights split back into their projections).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors()
    {
        foreach (var part in _parts)
        {
            if (part.Rows.Length == 0)
            {
                yield return ($"{part.Prefix}.weight", weight);
                if (bias is not null)
                {
                    yield return ($"{part.Prefix}.bias", bias);
                }
                continue;
            }
            var rows = tensor(part.Rows, device: weight.device);
            yield return ($"{part.Prefix}.weight", weight.index_select(0, rows));
            if (bias is not null)
            {
                yield return ($"{part.Prefix}.bias", bias.index_select(0, rows));
            }
        }
    }

    /// <summary>Rows start..start+count-1 as an array (for <see cref="FusedPart"/>).</summary>
    public static long[] Range(long start, long count) => Enumerable.Range(0, (int)count).Select(i => start + i).ToArray();
}
