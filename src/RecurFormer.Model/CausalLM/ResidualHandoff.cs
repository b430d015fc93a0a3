using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// The residual stream [T, hidden] entering one decoder layer, handed from one model's forward to another's whose
/// embedding and layers below it compute the same (<see cref="TransformerCausalLM.SameLayersAs"/>). Why: in
/// distillation the student's layers below its first replaced one are the teacher's, so its forward can start from
/// the teacher's stream there instead of computing those layers again (docs/conversion.md, seventeenth round).
/// One forward leaves it (<see cref="ForwardBatch.LeaveResidual"/>), the next starts from it
/// (<see cref="ForwardBatch.StartFrom"/>); it holds no autograd graph.
/// </summary>
public sealed class ResidualHandoff(int layer) : IDisposable
{
    /// <summary>The layer the stream enters (its count of layers below).</summary>
    public int Layer { get; } = layer;

    /// <summary>The stream, once a forward has left it; null before.</summary>
    public Tensor? Hidden { get; private set; }

    /// <summary>Called by a forward before it runs layer <paramref name="layer"/> on <paramref name="hidden"/>.</summary>
    internal void LeaveAt(int layer, Tensor hidden)
    {
        if (layer != Layer)
        {
            return;
        }
        Hidden?.Dispose();
        Hidden = hidden.detach().DetachFromDisposeScope();
    }

    /// <summary>The stream for a forward of <paramref name="tokens"/> packed tokens of width <paramref name="width"/>.</summary>
    internal Tensor StreamFor(long tokens, long width) =>
        Hidden is null
            ? throw new InvalidOperationException($"no forward has left its residual stream at layer {Layer} yet")
            : Hidden.shape.SequenceEqual([tokens, width])
                ? Hidden
                : throw new ArgumentException($"the residual stream handed over is [{string.Join(", ", Hidden.shape)}], the batch needs [{tokens}, {width}]");

    public void Dispose() => Hidden?.Dispose();
}
