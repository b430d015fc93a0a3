using RecurFormer.Model.Caching;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Caching;

/// <summary>What the cache holds now: bytes held by running sequences, by kind, and what they would hold with no group replaced.</summary>
public sealed record CacheUsage(long KvBytes, long WindowKvBytes, long MambaStateBytes, long WithoutReplacementBytes, long BudgetBytes, int BlocksInUse, int BlocksTotal, int Sequences)
{
    public long TotalBytes => KvBytes + WindowKvBytes + MambaStateBytes;
    public double UsageRatio => BudgetBytes == 0 ? 0 : (double)TotalBytes / BudgetBytes;

    /// <summary>1 − held / without-replacement; 0 when nothing is held.</summary>
    public double SavedRatio => WithoutReplacementBytes == 0 ? 0 : 1.0 - (double)TotalBytes / WithoutReplacementBytes;

    public static CacheUsage Empty(long budget) => new(0, 0, 0, 0, budget, 0, 0, 0);
}

/// <summary>
/// One memory budget for every kind of per-sequence state, over the model's <see cref="CacheStorage"/>. Attention KV
/// of the full groups lives in a pool of fixed-size blocks (BlockSize tokens × every layer), handed out to sequences
/// through block tables; window ring buffers and Mamba state are fixed-size per sequence (a slot). A sequence is
/// admitted only when a slot is free and its fixed state and the blocks for its tokens fit in what the budget has
/// left. The block pool is sized to the whole budget and the slot pool to the most sequences that can run, so
/// memory held physically is at most the budget plus the slots' fixed state. Engine thread only.
/// </summary>
public sealed class HybridCacheManager : IDisposable
{
    private readonly Stack<int> _freeBlocks = new();
    private readonly Stack<int> _freeSlots = new();
    private readonly Dictionary<SequenceCache, int> _reservedTokens = [];
    private readonly CacheStorage _storage;

    /// <param name="slots">Sequences that may hold a cache at once (running ones, forks included).</param>
    /// <param name="maxSequenceTokens">Longest sequence: sizes the block tables.</param>
    public HybridCacheManager(CacheLayout layout, long budgetBytes, int slots, int maxSequenceTokens, Device device)
    {
        Layout = layout;
        BudgetBytes = budgetBytes;
        TotalBlocks = layout.BlockBytes == 0 ? 0 : (int)Math.Min(int.MaxValue, budgetBytes / layout.BlockBytes);
        _storage = new CacheStorage(layout, TotalBlocks, slots, Math.Max(1, layout.BlocksFor(maxSequenceTokens + 1)), device);
        for (var block = TotalBlocks - 1; block >= 0; block--)
        {
            _freeBlocks.Push(block);
        }
        for (var slot = slots - 1; slot >= 0; slot--)
        {
            _freeSlots.Push(slot);
        }
    }

    public CacheLayout Layout { get; }
    public CacheStorage Storage => _storage;
    public long BudgetBytes { get; }
    public int TotalBlocks { get; }
    public int FreeBlocks => _freeBlocks.Count;

    /// <summary>Bytes held now: blocks in use, plus the fixed state of every live sequence.</summary>
    public long BytesInUse => (long)(TotalBlocks - FreeBlocks) * Layout.BlockBytes + (long)_reservedTokens.Count * Layout.SlotBytes;

    /// <summary>Could a sequence of <paramref name="tokens"/> tokens ever fit, with nothing else running?</summary>
    public bool CouldEverFit(int tokens) => Layout.SequenceBytes(tokens) <= BudgetBytes && BlocksNeeded(tokens) <= Math.Max(TotalBlocks, 0);

    private int BlocksNeeded(int tokens) => Layout.BlockBytes == 0 ? 0 : Layout.BlocksFor(tokens);

    /// <summary>
    /// A new sequence with room for <paramref name="tokens"/> tokens, or null when memory or slots do not allow. With
    /// <paramref name="headroomBlocks"/>, that many blocks must stay free afterwards (for running sequences to grow).
    /// </summary>
    public SequenceCache? TryAdmit(int tokens, int headroomBlocks = 0)
    {
        var blocks = BlocksNeeded(tokens);
        var headroom = Layout.BlockBytes == 0 ? 0 : headroomBlocks;
        if (_freeSlots.Count == 0 || blocks + headroom > FreeBlocks || BytesInUse + Layout.SlotBytes + (long)(blocks + headroom) * Layout.BlockBytes > BudgetBytes)
        {
            return null;
        }
        var cache = new SequenceCache(_storage, _freeSlots.Pop());
        _storage.ResetSlot(cache.Slot);
        for (var i = 0; i < blocks; i++)
        {
            cache.AddBlock(_freeBlocks.Pop());
        }
        _reservedTokens[cache] = tokens;
        return cache;
    }

    /// <summary>
    /// A copy of <paramref name="parent"/> (KV rows, window rings, Mamba state) with room for
    /// <paramref name="tokens"/> + 1 tokens, or null when memory does not allow: n > 1 choices share the prompt's prefill.
    /// </summary>
    public SequenceCache? TryFork(SequenceCache parent, int tokens)
    {
        var child = TryAdmit(tokens + 1);
        if (child is null)
        {
            return null;
        }
        for (var block = 0; block < BlocksNeeded(parent.Length); block++)
        {
            _storage.CopyBlock(parent.Blocks[block], child.Blocks[block]);
        }
        _storage.CopySlot(parent.Slot, child.Slot);
        child.ContinueFrom(parent);
        return child;
    }

    /// <summary>Makes room for the sequence to hold <paramref name="tokens"/> tokens; false when blocks ran out.</summary>
    public bool TryReserve(SequenceCache cache, int tokens)
    {
        var missing = BlocksNeeded(tokens) - cache.Blocks.Count;
        if (missing > FreeBlocks || BytesInUse + (long)Math.Max(missing, 0) * Layout.BlockBytes > BudgetBytes)
        {
            return false;
        }
        for (var i = 0; i < missing; i++)
        {
            cache.AddBlock(_freeBlocks.Pop());
        }
        _reservedTokens[cache] = Math.Max(_reservedTokens[cache], tokens);
        return true;
    }

    /// <summary>Returns a sequence's blocks and slot to the budget.</summary>
    public void Release(SequenceCache cache)
    {
        if (!_reservedTokens.Remove(cache))
        {
            return;
        }
        foreach (var block in cache.Blocks)
        {
            _freeBlocks.Push(block);
        }
        _freeSlots.Push(cache.Slot);
    }

    public CacheUsage Usage()
    {
        var blocksInUse = TotalBlocks - FreeBlocks;
        var sequences = _reservedTokens.Count;
        return new CacheUsage(
            blocksInUse * Layout.BlockBytes,
            sequences * Layout.WindowSlotBytes,
            sequences * Layout.MambaSlotBytes,
            _reservedTokens.Values.Sum(Layout.SequenceBytesWithoutReplacement),
            BudgetBytes,
            blocksInUse,
            TotalBlocks,
            sequences);
    }

    public void Dispose() => _storage.Dispose();
}
