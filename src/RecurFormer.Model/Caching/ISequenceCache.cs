using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Model.Caching;

/// <summary>
/// Everything one sequence carries from one forward to the next: attention keys/values per layer and the
/// recurrent state of Mamba layers. The model reads and writes it; who owns the memory (a dense per-sequence
/// buffer here, paged blocks in the engine) is the implementation's business.
/// </summary>
public interface ISequenceCache : IDisposable
{
    /// <summary>Tokens already processed; the next token's position.</summary>
    int Length { get; }

    /// <summary>
    /// Stores this step's keys and values of one layer ([kvHeads, n, headDim] each) after the ones already held and
    /// returns all of them ([kvHeads, Length + n, headDim]). The returned tensors are only valid during the forward.
    /// </summary>
    (Tensor Keys, Tensor Values) AppendKeyValues(int layer, Tensor keys, Tensor values);

    /// <summary>
    /// Stores this step's keys and values of one layer's windowed groups ([windowGroups, n, headDim]) and returns the
    /// keys and values the step's queries may need (at least the sinks and the last <see cref="WindowSpec.Size"/>
    /// positions before the step, plus the new ones), with their absolute positions [m]. Implementations may keep
    /// only sinks + window (a ring buffer) or more; the caller masks by position.
    /// </summary>
    (Tensor Keys, Tensor Values, Tensor Positions) AppendWindowKeyValues(int layer, Tensor keys, Tensor values, WindowSpec window);

    /// <summary>The recurrent state of one Mamba layer, or null before the first token.</summary>
    MambaState? GetMambaState(int layer);

    /// <summary>Replaces the recurrent state of one Mamba layer; the cache takes ownership of the tensors.</summary>
    void SetMambaState(int layer, MambaState state);

    /// <summary>Marks <paramref name="tokens"/> more tokens as processed (after every layer has seen them).</summary>
    void Advance(int tokens);
}

/// <summary>
/// Mamba-1 recurrent state of one sequence in one layer, float32: the last conv-kernel inputs of the
/// depthwise convolution [dInner, dConv] and the SSM state [dInner, dState].
/// </summary>
public sealed record MambaState(Tensor Conv, Tensor Ssm) : IDisposable
{
    public void Dispose()
    {
        Conv.Dispose();
        Ssm.Dispose();
    }
}
