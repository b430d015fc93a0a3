using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// What the teacher gives stage 1 for one share of a batch: each replaced layer's input (teacher forcing; [tokens,
/// hidden] in the products' dtype) and the replaced heads' output (the target; [tokens, ·] float32), and the target's energy after o_proj, which the shares
/// pool into the loss's reference (<see cref="Reference"/>) so that the loss does not depend on how a batch is split.
/// </summary>
public sealed class Stage1Targets(int sequences, IReadOnlyList<Stage1Targets.Layer> layers) : IDisposable
{
    /// <param name="Energy">Σ of the squared target after o_proj.</param>
    /// <param name="Elements">How many values that sum covers (tokens × hidden size).</param>
    public sealed record Layer(int Index, Tensor Input, Tensor Target, double Energy, long Elements);

    public int Sequences => sequences;
    public IReadOnlyList<Layer> Layers => layers;

    /// <summary>Each layer's pooled (energy, elements) over the shares of a batch, summed in share order.</summary>
    public static Dictionary<int, (double Energy, long Elements)> Reference(IEnumerable<Stage1Targets> shares)
    {
        var pooled = new Dictionary<int, (double Energy, long Elements)>();
        foreach (var layer in shares.SelectMany(s => s.Layers))
        {
            var (energy, elements) = pooled.GetValueOrDefault(layer.Index);
            pooled[layer.Index] = (energy + layer.Energy, elements + layer.Elements);
        }
        return pooled;
    }

    public void Dispose()
    {
        foreach (var layer in layers)
        {
            layer.Input.Dispose();
            layer.Target.Dispose();
        }
    }
}
