using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Model.Caching;

/// <summary>
/// A sequence cache in plain per-layer buffers whose capacity doubles as the sequence grows. Used by the CLI,
/// the toolkit and the tests; the engine uses paged blocks instead.
/// </summary>
public sealed class DenseSequenceCache(int layers) : ISequenceCache
{
    private readonly Tensor?[] _keys = new Tensor?[layers];
    private readonly Tensor?[] _values = new Tensor?[layers];
    private readonly Tensor?[] _windowKeys = new Tensor?[layers];
    private readonly Tensor?[] _windowValues = new Tensor?[layers];
    private readonly MambaStateTable _mamba = new(layers);

    public int Length { get; private set; }

    public (Tensor Keys, Tensor Values) AppendKeyValues(int layer, Tensor keys, Tensor values) =>
        Append(_keys, _values, layer, keys, values);

    /// <summary>Keeps every position (this cache is for tools and tests); the caller's mask applies the window.</summary>
    public (Tensor Keys, Tensor Values, Tensor Positions) AppendWindowKeyValues(int layer, Tensor keys, Tensor values, WindowSpec window)
    {
        var (allKeys, allValues) = Append(_windowKeys, _windowValues, layer, keys, values);
        return (allKeys, allValues, arange(allKeys.shape[1], device: keys.device));
    }

    /// <summary>Writes the step's keys/values after the held ones in one layer's buffers; returns all of them.</summary>
    private (Tensor Keys, Tensor Values) Append(Tensor?[] keyBuffers, Tensor?[] valueBuffers, int layer, Tensor keys, Tensor values)
    {
        var needed = Length + keys.shape[1];
        var keyBuffer = keyBuffers[layer] = Reserve(keyBuffers[layer], keys, needed);
        var valueBuffer = valueBuffers[layer] = Reserve(valueBuffers[layer], values, needed);
        keyBuffer.narrow(1, Length, keys.shape[1]).copy_(keys);
        valueBuffer.narrow(1, Length, values.shape[1]).copy_(values);
        return (keyBuffer.narrow(1, 0, needed), valueBuffer.narrow(1, 0, needed));
    }

    /// <summary>Returns a buffer of at least <paramref name="needed"/> positions, growing (doubling) when full.</summary>
    private Tensor Reserve(Tensor? buffer, Tensor like, long needed)
    {
        if (buffer is not null && buffer.shape[1] >= needed)
        {
            return buffer;
        }
        var capacity = Math.Max(needed, Math.Max(16, (buffer?.shape[1] ?? 0) * 2));
        var grown = zeros([like.shape[0], capacity, like.shape[2]], like.dtype, like.device).DetachFromDisposeScope();
        if (buffer is not null)
        {
            grown.narrow(1, 0, Length).copy_(buffer.narrow(1, 0, Length));
            buffer.Dispose();
        }
        return grown;
    }

    public MambaState? GetMambaState(int layer) => _mamba.Get(layer);

    public void SetMambaState(int layer, MambaState state) => _mamba.Set(layer, state);

    public void Advance(int tokens) => Length += tokens;

    public void Dispose()
    {
        foreach (var tensor in _keys.Concat(_values).Concat(_windowKeys).Concat(_windowValues))
        {
            tensor?.Dispose();
        }
        _mamba.Dispose();
    }
}
