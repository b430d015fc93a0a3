using static TorchSharp.torch;

namespace RecurFormer.Engine.Caching;

/// <summary>Bytes held by running sequences, by kind, and what they would hold with no group replaced.</summary>
public sealed record CacheUsage(long KvBytes, long WindowKvBytes, long MambaStateBytes, long WithoutReplacementBytes, long BudgetBytes, int BlocksInUse, int BlocksTotal, int Sequences)
{
    public long TotalBytes => KvBytes + WindowKvBytes + MambaStateBytes;
    public double UsageRatio => BudgetBytes == 0 ? 0 : (double)TotalBytes / BudgetBytes;

    /// <summary>1 − held / without-replacement; 0 when nothing is held.</summary>
    public double SavedRatio => WithoutReplacementBytes == 0 ? 0 : 1.0 - (double)TotalBytes / WithoutReplacementBytes;

    public static CacheUsage Empty(long budget) => new(0, 0, 0, 0, budget, 0, 0, 0);
}

/// <summary>
/// One memory budget for every kind of per-sequence state. Attention KV of the full groups lives in a pool of
/// fixed-size blocks (BlockSize tokens × every layer), handed out to sequences through block tables; window ring
/// buffers and Mamba state are fixed-size per sequence and allocated with it. A sequence is admitted only when its
/// fixed state and the blocks for its tokens fit in what the budget has left. Engine thread only.
/// </summary>
public sealed class HybridCacheManager : IDisposable
{
    private readonly Stack<int> _freeBlocks = new();
    private readonly HashSet<PagedSequenceCache> _live = [];
    private readonly Tensor?[] _keyPool;   // per layer [blocks × BlockSize, fullGroups, headDim], or null
    private readonly Tensor?[] _valuePool;

    public HybridCacheManager(CacheLayout layout, long budgetBytes, Device device, ScalarType computeDType)
    {
        Layout = layout;
        BudgetBytes = budgetBytes;
        Device = device;
        ComputeDType = computeDType;
        TotalBlocks = layout.BlockBytes == 0 ? 0 : (int)Math.Min(int.MaxValue, budgetBytes / layout.BlockBytes);
        _keyPool = new Tensor?[layout.Layers];
        _valuePool = new Tensor?[layout.Layers];
        for (var layer = 0; layer < layout.Layers; layer++)
        {
            if (layout.FullGroups[layer] > 0 && TotalBlocks > 0)
            {
                long[] shape = [(long)TotalBlocks * layout.BlockSize, layout.FullGroups[layer], layout.HeadDim];
                _keyPool[layer] = zeros(shape, layout.KvDType, device).DetachFromDisposeScope();
                _valuePool[layer] = zeros(shape, layout.KvDType, device).DetachFromDisposeScope();
            }
        }
        for (var block = TotalBlocks - 1; block >= 0; block--)
        {
            _freeBlocks.Push(block);
        }
    }

    public CacheLayout Layout { get; }
    public long BudgetBytes { get; }
    public Device Device { get; }
    public ScalarType ComputeDType { get; }
    public int TotalBlocks { get; }
    public int FreeBlocks => _freeBlocks.Count;
    public int LiveSequences => _live.Count;

    internal Tensor KeyPool(int layer) => _keyPool[layer]!;
    internal Tensor ValuePool(int layer) => _valuePool[layer]!;

    /// <summary>Bytes held now: blocks in use, plus the fixed state of every live sequence.</summary>
    public long BytesInUse => (long)(TotalBlocks - FreeBlocks) * Layout.BlockBytes + (long)_live.Count * Layout.SlotBytes;

    /// <summary>Could a sequence of <paramref name="tokens"/> tokens ever fit, with nothing else running?</summary>
    public bool CouldEverFit(int tokens) => Layout.SequenceBytes(tokens) <= BudgetBytes && BlocksNeeded(tokens) <= Math.Max(TotalBlocks, 0);

    private int BlocksNeeded(int tokens) => Layout.BlockBytes == 0 ? 0 : Layout.BlocksFor(tokens);

    /// <summary>
    /// A new sequence with room for <paramref name="tokens"/> tokens, or null when memory does not allow. With
    /// <paramref name="headroomBlocks"/>, that many blocks must stay free afterwards (for running sequences to grow).
    /// </summary>
    public PagedSequenceCache? TryAdmit(int tokens, int headroomBlocks = 0)
    {
        var blocks = BlocksNeeded(tokens);
        var headroom = Layout.BlockBytes == 0 ? 0 : headroomBlocks;
        if (blocks + headroom > FreeBlocks || BytesInUse + Layout.SlotBytes + (long)(blocks + headroom) * Layout.BlockBytes > BudgetBytes)
        {
            return null;
        }
        var cache = new PagedSequenceCache(this);
        _live.Add(cache);
        for (var i = 0; i < blocks; i++)
        {
            cache.AddBlock(_freeBlocks.Pop());
        }
        cache.ReservedTokens = tokens;
        return cache;
    }

    /// <summary>
    /// A copy of <paramref name="parent"/> (KV rows, window rings, Mamba state) with room for
    /// <paramref name="tokens"/> + 1 tokens, or null when memory does not allow: n > 1 choices share the prompt's prefill.
    /// </summary>
    public PagedSequenceCache? TryFork(PagedSequenceCache parent, int tokens)
    {
        var child = TryAdmit(tokens + 1);
        if (child is null)
        {
            return null;
        }
        try
        {
            using var scope = NewDisposeScope();
            for (var layer = 0; layer < Layout.Layers; layer++)
            {
                if (_keyPool[layer] is { } keys && _valuePool[layer] is { } values && parent.Length > 0)
                {
                    var from = parent.SlotIndex(parent.Length);
                    var to = child.SlotIndex(parent.Length);
                    keys.index_copy_(0, to, keys.index_select(0, from));
                    values.index_copy_(0, to, values.index_select(0, from));
                }
            }
            child.CopyStateFrom(parent);
            return child;
        }
        catch
        {
            child.Dispose();
            throw;
        }
    }

    /// <summary>Makes room for the sequence to hold <paramref name="tokens"/> tokens; false when blocks ran out.</summary>
    public bool TryReserve(PagedSequenceCache cache, int tokens)
    {
        var missing = BlocksNeeded(tokens) - cache.BlockCount;
        if (missing > FreeBlocks || BytesInUse + (long)Math.Max(missing, 0) * Layout.BlockBytes > BudgetBytes)
        {
            return false;
        }
        for (var i = 0; i < missing; i++)
        {
            cache.AddBlock(_freeBlocks.Pop());
        }
        cache.ReservedTokens = Math.Max(cache.ReservedTokens, tokens);
        return true;
    }

    /// <summary>Returns a sequence's blocks and fixed state to the budget.</summary>
    internal void Release(PagedSequenceCache cache)
    {
        if (!_live.Remove(cache))
        {
            return;
        }
        foreach (var block in cache.Blocks)
        {
            _freeBlocks.Push(block);
        }
    }

    public CacheUsage Usage()
    {
        var blocksInUse = TotalBlocks - FreeBlocks;
        var without = _live.Sum(c => Layout.SequenceBytesWithoutReplacement(c.ReservedTokens));
        return new CacheUsage(
            blocksInUse * Layout.BlockBytes,
            _live.Count * Layout.WindowSlotBytes,
            _live.Count * Layout.MambaSlotBytes,
            without,
            BudgetBytes,
            blocksInUse,
            TotalBlocks,
            _live.Count);
    }

    public void Dispose()
    {
        foreach (var cache in _live.ToList())
        {
            cache.Dispose();
        }
        foreach (var tensor in _keyPool.Concat(_valuePool))
        {
            tensor?.Dispose();
        }
    }
}
