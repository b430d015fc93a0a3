using RecurFormer.Model.Caching;
using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Caching;

/// <summary>
/// One running sequence's cache in the engine: a block table into the shared KV pool for full groups, a ring
/// buffer (sinks + last w tokens) per layer with windowed groups, and Mamba state per layer with a mixer.
/// Created and released by <see cref="HybridCacheManager"/>; used by the model during forwards on the engine thread.
/// </summary>
public sealed class PagedSequenceCache : ISequenceCache
{
    private readonly HybridCacheManager _manager;
    private readonly List<int> _blocks = [];
    private readonly MambaStateTable _mamba;
    private readonly WindowRing?[] _rings;
    private Tensor? _slots;        // pool row of every position 0.._slotsCount-1, on the device
    private int _slotsCount;
    private bool _disposed;

    internal PagedSequenceCache(HybridCacheManager manager)
    {
        _manager = manager;
        _mamba = new MambaStateTable(manager.Layout.Layers);
        _rings = new WindowRing?[manager.Layout.Layers];
    }

    public int Length { get; private set; }
    internal int ReservedTokens { get; set; }
    internal IReadOnlyList<int> Blocks => _blocks;
    internal int BlockCount => _blocks.Count;

    internal void AddBlock(int block)
    {
        _blocks.Add(block);
    }

    public (Tensor Keys, Tensor Values) AppendKeyValues(int layer, Tensor keys, Tensor values)
    {
        var n = (int)keys.shape[1];
        var total = Length + n;
        if (total > _blocks.Count * _manager.Layout.BlockSize)
        {
            throw new InvalidOperationException($"sequence holds blocks for {_blocks.Count * _manager.Layout.BlockSize} tokens, {total} needed: the scheduler must reserve first");
        }
        var slots = Slots(total);
        var keyPool = _manager.KeyPool(layer);
        var valuePool = _manager.ValuePool(layer);
        var newSlots = slots.narrow(0, Length, n);
        keyPool.index_copy_(0, newSlots, keys.transpose(0, 1).to_type(keyPool.dtype));     // pool rows are [groups, hd] per token
        valuePool.index_copy_(0, newSlots, values.transpose(0, 1).to_type(valuePool.dtype));
        var dtype = keys.dtype;
        return (keyPool.index_select(0, slots).transpose(0, 1).to_type(dtype), valuePool.index_select(0, slots).transpose(0, 1).to_type(dtype));
    }

    /// <summary>Pool rows of positions 0..count-1 through the block table; rebuilt once per forward, shared by all layers.</summary>
    internal Tensor SlotIndex(int count) => Slots(count);

    /// <summary>Takes a copy of another sequence's fixed state and length (its KV rows are copied by the manager).</summary>
    internal void CopyStateFrom(PagedSequenceCache parent)
    {
        _mamba.CopyFrom(parent._mamba);
        for (var layer = 0; layer < _rings.Length; layer++)
        {
            _rings[layer] = parent._rings[layer]?.Clone();
        }
        Length = parent.Length;
    }

    private Tensor Slots(int count)
    {
        if (_slots is null || _slotsCount != count)
        {
            var blockSize = _manager.Layout.BlockSize;
            var rows = new long[count];
            for (var p = 0; p < count; p++)
            {
                rows[p] = (long)_blocks[p / blockSize] * blockSize + p % blockSize;
            }
            _slots?.Dispose();
            _slots = tensor(rows, device: _manager.Device).DetachFromDisposeScope();
            _slotsCount = count;
        }
        return _slots;
    }

    public (Tensor Keys, Tensor Values, Tensor Positions) AppendWindowKeyValues(int layer, Tensor keys, Tensor values, WindowSpec window)
    {
        var ring = _rings[layer] ??= new WindowRing(window, keys.shape[0], keys.shape[2], _manager.Layout.KvDType, _manager.Device);
        return ring.Append(keys, values, Length);
    }

    public MambaState? GetMambaState(int layer) => Length == 0 ? null : _mamba.Get(layer);

    public void SetMambaState(int layer, MambaState state) => _mamba.Set(layer, state);

    public void Advance(int tokens) => Length += tokens;

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        _manager.Release(this);
        _slots?.Dispose();
        _mamba.Dispose();
        foreach (var ring in _rings)
        {
            ring?.Dispose();
        }
    }
}

/// <summary>
/// Keys and values of one layer's windowed groups for one sequence: the first <c>sinks</c> positions, then the last
/// <c>size</c> positions in a circular buffer. Position p lives at p (p &lt; sinks) or sinks + (p − sinks) mod size.
/// </summary>
internal sealed class WindowRing : IDisposable
{
    private readonly WindowSpec _window;
    private readonly Tensor _keys;     // [groups, sinks + size, hd]
    private readonly Tensor _values;
    private readonly long[] _positions; // absolute position held at each index, −1 when empty

    public WindowRing(WindowSpec window, long groups, long headDim, ScalarType dtype, Device device)
    {
        _window = window;
        _keys = zeros([groups, window.Capacity, headDim], dtype, device).DetachFromDisposeScope();
        _values = zeros([groups, window.Capacity, headDim], dtype, device).DetachFromDisposeScope();
        _positions = Enumerable.Repeat(-1L, window.Capacity).ToArray();
    }

    /// <summary>Returns what the ring held before this step plus the step's keys (the caller masks by position), then stores the step's keys.</summary>
    public (Tensor Keys, Tensor Values, Tensor Positions) Append(Tensor keys, Tensor values, int start)
    {
        var n = (int)keys.shape[1];
        var device = keys.device;
        var held = Enumerable.Range(0, _positions.Length).Where(i => _positions[i] >= 0).ToArray();
        var heldIndex = tensor(held.Select(i => (long)i).ToArray(), device: device);
        var allKeys = cat([_keys.index_select(1, heldIndex).to_type(keys.dtype), keys], 1);
        var allValues = cat([_values.index_select(1, heldIndex).to_type(values.dtype), values], 1);
        var positions = tensor(held.Select(i => _positions[i]).Concat(Enumerable.Range(start, n).Select(p => (long)p)).ToArray(), device: device);

        // Only positions that survive the step are written: sinks, and the last `size` of the rest.
        var survivors = Enumerable.Range(start, n).Where(p => p < _window.Sinks || p >= start + n - _window.Size).ToArray();
        if (survivors.Length > 0)
        {
            var source = tensor(survivors.Select(p => (long)(p - start)).ToArray(), device: device);
            var target = tensor(survivors.Select(p => (long)IndexOf(p)).ToArray(), device: device);
            _keys.index_copy_(1, target, keys.index_select(1, source).to_type(_keys.dtype));
            _values.index_copy_(1, target, values.index_select(1, source).to_type(_values.dtype));
            foreach (var p in survivors)
            {
                _positions[IndexOf(p)] = p;
            }
        }
        return (allKeys, allValues, positions);
    }

    public WindowRing Clone()
    {
        var copy = new WindowRing(_window, _keys.shape[0], _keys.shape[2], _keys.dtype, _keys.device);
        copy._keys.copy_(_keys);
        copy._values.copy_(_values);
        Array.Copy(_positions, copy._positions, _positions.Length);
        return copy;
    }

    private int IndexOf(int position) => position < _window.Sinks ? position : _window.Sinks + (position - _window.Sinks) % _window.Size;

    public void Dispose()
    {
        _keys.Dispose();
        _values.Dispose();
    }
}
