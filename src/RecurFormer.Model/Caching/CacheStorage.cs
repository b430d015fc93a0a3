using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Caching;

/// <summary>
/// The cache memory of one model on one device, shared by many sequences, as the model reads it:
/// <list type="bullet">
/// <item>full-attention KV in a pool of fixed-size blocks per layer, <c>[fullGroups, blocks × BlockSize, headDim]</c>
/// (group-major: one group's keys of one block are one contiguous run, which is what a decode step reads), reached
/// through each sequence's block table;</item>
/// <item>per sequence "slot": window rings per layer <c>[slots, windowGroups, sinks + window, headDim]</c> and Mamba
/// state per layer, conv <c>[slots, dInner, dConv − 1]</c> and SSM <c>[slots, dInner, dState]</c> in float32.</item>
/// </list>
/// The slot pools have room for <c>snapshots</c> more slots after the sequences' own: copies of a sequence's rings and
/// Mamba state at a block boundary, which is what lets a later request resume a cached prefix (prefix caching).
/// Pools make every batched read one gather and every write one scatter whatever the batch size. The block tables
/// of all slots live in one device tensor <c>[slots, maxBlocksPerSequence]</c>, updated when a block is added, so a
/// decode step uploads only which slots it runs. Who gets which block or slot is decided by the owner (the engine's
/// cache manager, or a <see cref="CacheSet"/> for tools and tests). Engine thread only.
/// </summary>
public sealed class CacheStorage : IDisposable
{
    private readonly Tensor?[] _keys, _values, _ringKeys, _ringValues, _conv, _ssm;
    private bool _disposed;

    public CacheStorage(CacheLayout layout, int blocks, int slots, int maxBlocksPerSequence, Device device, int snapshots = 0)
    {
        Layout = layout;
        BlockCount = blocks;
        SlotCount = slots;
        SnapshotCount = layout.SlotBytes == 0 ? 0 : snapshots;
        var stateSlots = slots + SnapshotCount;
        MaxBlocksPerSequence = maxBlocksPerSequence;
        Device = device;
        var layers = layout.Layers;
        _keys = new Tensor?[layers];
        _values = new Tensor?[layers];
        _ringKeys = new Tensor?[layers];
        _ringValues = new Tensor?[layers];
        _conv = new Tensor?[layers];
        _ssm = new Tensor?[layers];
        for (var layer = 0; layer < layers; layer++)
        {
            if (layout.FullGroups[layer] > 0 && blocks > 0)
            {
                long[] shape = [layout.FullGroups[layer], (long)blocks * layout.BlockSize, layout.HeadDim];
                _keys[layer] = Allocate(shape, layout.KvDType);
                _values[layer] = Allocate(shape, layout.KvDType);
            }
            if (layout.WindowGroups[layer] > 0 && slots > 0)
            {
                long[] shape = [stateSlots, layout.WindowGroups[layer], layout.Window.Capacity, layout.HeadDim];
                _ringKeys[layer] = Allocate(shape, layout.KvDType);
                _ringValues[layer] = Allocate(shape, layout.KvDType);
            }
            if (layout.MambaShapes[layer] is { } mixer && slots > 0)
            {
                _conv[layer] = Allocate([stateSlots, mixer.InnerSize, mixer.ConvStateColumns], ScalarType.Float32);
                _ssm[layer] = Allocate([stateSlots, mixer.InnerSize, mixer.StateSize], ScalarType.Float32);
            }
        }
        BlockTables = Allocate([slots, maxBlocksPerSequence], ScalarType.Int64);
        // Resolved now, on the creating thread: every kernel thread reads these, and resolving them lazily from the kernel
        // threads let one thread read another's half-written struct (a null pool pointer: an access violation).
        _memory = Enumerable.Range(0, layers).Select(layer => new PoolMemory(
            View(_keys[layer]), View(_values[layer]), View(_ringKeys[layer]), View(_ringValues[layer]), View(_conv[layer]), View(_ssm[layer]))).ToArray();
    }

    private Tensor Allocate(long[] shape, ScalarType dtype) => zeros(shape, dtype, Device).DetachFromDisposeScope();

    public CacheLayout Layout { get; }
    public int BlockCount { get; }
    public int SlotCount { get; }

    /// <summary>Snapshot slots, numbered <see cref="SlotCount"/> onwards (none for a model without rings or Mamba state).</summary>
    public int SnapshotCount { get; }
    public int MaxBlocksPerSequence { get; }

    /// <summary>Token rows of a full-attention pool: blocks × BlockSize.</summary>
    public long PoolRows => (long)BlockCount * Layout.BlockSize;
    public Device Device { get; }
    public bool IsCpu => Device.type == DeviceType.CPU;

    /// <summary>Full-group keys / values of a layer: <c>[fullGroups, blocks × BlockSize, headDim]</c>, or null.</summary>
    public Tensor? Keys(int layer) => _keys[layer];
    public Tensor? Values(int layer) => _values[layer];

    /// <summary>Window rings of a layer: <c>[slots, windowGroups, capacity, headDim]</c>, or null.</summary>
    public Tensor? RingKeys(int layer) => _ringKeys[layer];
    public Tensor? RingValues(int layer) => _ringValues[layer];

    /// <summary>Mamba state of a layer: conv <c>[slots, dInner, dConv − 1]</c> (the last inputs, oldest first), SSM <c>[slots, dInner, dState]</c>, or null.</summary>
    public Tensor? Conv(int layer) => _conv[layer];
    public Tensor? Ssm(int layer) => _ssm[layer];

    /// <summary>The pools as the CPU kernels read them: (keys, values, ring keys, ring values, conv, SSM) of a layer, resolved once.</summary>
    internal PoolMemory Memory(int layer) => _memory[layer];

    private readonly PoolMemory[] _memory;

    private static Values View(Tensor? pool) => pool is null || !Kernel.Supports(pool) ? default : Kernel.ValuesOf(pool);

    /// <summary>Whether the CPU kernels can read every pool (float32 or bfloat16 KV on the CPU).</summary>
    internal bool KernelsSupport => IsCpu && Layout.KvDType is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>Every slot's block table, <c>[slots, maxBlocksPerSequence]</c> int64 on the device (unused entries 0).</summary>
    public Tensor BlockTables { get; }

    internal void SetBlock(int slot, int index, int block)
    {
        if (index >= MaxBlocksPerSequence)
        {
            throw new InvalidOperationException($"a sequence may hold at most {MaxBlocksPerSequence} blocks ({MaxBlocksPerSequence * Layout.BlockSize} tokens)");
        }
        var flat = (long)slot * MaxBlocksPerSequence + index;
        if (IsCpu)
        {
            TensorMemory.Span<long>(BlockTables)[(int)flat] = block;
        }
        else
        {
            BlockTables[slot, index] = tensor((long)block);
        }
    }

    /// <summary>
    /// Clears a slot's Mamba state for a new sequence (ring contents need no clearing: a ring entry is read only
    /// once its position has been written, which the sequence length tells).
    /// </summary>
    public void ResetSlot(int slot)
    {
        using var scope = NewDisposeScope();
        for (var layer = 0; layer < Layout.Layers; layer++)
        {
            _conv[layer]?[slot].zero_();
            _ssm[layer]?[slot].zero_();
        }
    }

    /// <summary>Copies a slot's fixed state (rings, Mamba state) to another slot: n > 1 choices, snapshots taken and restored.</summary>
    public void CopySlot(int from, int to)
    {
        using var scope = NewDisposeScope();
        foreach (var pool in _ringKeys.Concat(_ringValues).Concat(_conv).Concat(_ssm))
        {
            pool?[to].copy_(pool[from]);
        }
    }

    /// <summary>Copies the KV rows of one block into another (the partly filled last block of a forked sequence).</summary>
    public void CopyBlock(int from, int to)
    {
        using var scope = NewDisposeScope();
        var size = Layout.BlockSize;
        foreach (var pool in _keys.Concat(_values))
        {
            pool?.narrow(1, (long)to * size, size).copy_(pool.narrow(1, (long)from * size, size));
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var tensor in _keys.Concat(_values).Concat(_ringKeys).Concat(_ringValues).Concat(_conv).Concat(_ssm))
        {
            tensor?.Dispose();
        }
        BlockTables.Dispose();
    }
}

/// <summary>One layer's pools as kernel views (a default view where the layer has no such pool).</summary>
internal readonly record struct PoolMemory(Values Keys, Values Values, Values RingKeys, Values RingValues, Values Conv, Values Ssm);
