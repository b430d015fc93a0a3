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

    public (Tensor Keys, Tensor Values) AppendKeyValues(int layer, Tensor keys, Tensor values)
    {
        var needed = Length + keys.shape[1];
        _keys[layer] = Reserve(_keys[layer], keys, needed);
        _values[layer] = Reserve(_values[layer], values, needed);
        _keys[layer]!.narrow(1, Length, keys.shape[1]).copy_(keys);
        _values[layer]!.narrow(1, Length, values.shape[1]).copy_(values);
        return (_keys[layer]!.narrow(1, 0, needed), _values[layer]!.narrow(1, 0, needed));
    }

    /// <summary>Keeps every position (this cache is for tools and tests); the caller's mask applies the window.</summary>
    public (Tensor Keys, Tensor Values, Tensor Positions) AppendWindowKeyValues(int layer, Tensor keys, Tensor values, WindowSpec window)
    {
        var needed = Length + keys.shape[1];
        _windowKeys[layer] = Reserve(_windowKeys[layer], keys, needed);
        _windowValues[layer] = Reserve(_windowValues[layer], values, needed);
        _windowKeys[layer]!.narrow(1, Length, keys.shape[1]).copy_(keys);
        _windowValues[layer]!.narrow(1, Length, values.shape[1]).copy_(values);
        return (_windowKeys[layer]!.narrow(1, 0, needed), _windowValues[layer]!.narrow(1, 0, needed), arange(needed, device: keys.device));
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
