using RecurFormer.Model.Caching;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Caching;

/// <summary>
/// What the cache holds now: bytes held by running sequences, by kind, and what they would hold with no group
/// replaced; then what cached prefixes keep for later requests (evicted when the budget needs the room).
/// </summary>
public sealed record CacheUsage(long KvBytes, long WindowKvBytes, long MambaStateBytes, long WithoutReplacementBytes, long BudgetBytes, int BlocksInUse, int BlocksTotal, int Sequences)
{
    public long TotalBytes => KvBytes + WindowKvBytes + MambaStateBytes;
    public double UsageRatio => BudgetBytes == 0 ? 0 : (double)TotalBytes / BudgetBytes;

    /// <summary>1 − held / without-replacement; 0 when nothing is held.</summary>
    public double SavedRatio => WithoutReplacementBytes == 0 ? 0 : 1.0 - (double)TotalBytes / WithoutReplacementBytes;

    /// <summary>Prefix cache: KV blocks with a name (in use or idle), and the snapshots' ring and Mamba bytes.</summary>
    public PrefixCacheUsage Prefix { get; init; } = PrefixCacheUsage.None;

    public static CacheUsage Empty(long budget) => new(0, 0, 0, 0, budget, 0, 0, 0);
}

/// <summary>
/// One memory budget for every kind of per-sequence state, over the model's <see cref="CacheStorage"/>. Attention KV
/// of the full groups lives in a pool of fixed-size blocks (BlockSize tokens × every layer), handed out to sequences
/// through block tables; window ring buffers and Mamba state are fixed-size per sequence (a slot). A sequence is
/// admitted only when a slot is free and its fixed state and the blocks for its tokens fit in what the budget has
/// left. The block pool is sized to the whole budget and the slot pool to the most sequences that can run, so
/// memory held physically is at most the budget plus the slots' fixed state (and, with prefix caching, the
/// snapshot slots, each charged to the budget while it holds a snapshot).
/// <para>
/// Blocks are reference-counted: n > 1 choices share their prompt's full blocks, and with prefix caching
/// (<see cref="PrefixCache"/>) full blocks are named by their tokens, outlive their sequence while the budget allows,
/// and are taken by any later request whose prompt starts the same way. Rings and Mamba state cannot be rewound, so
/// a prefix is usable only up to a block boundary where a snapshot of them was taken (models without them can
/// resume at any cached block). Engine thread only.
/// </para>
/// </summary>
public sealed class HybridCacheManager : IDisposable
{
    private readonly Stack<int> _freeBlocks = new();
    private readonly Stack<int> _freeSlots = new();
    private readonly int[] _references;
    private readonly Dictionary<SequenceCache, Held> _held = [];
    private readonly CacheStorage _storage;
    private readonly PrefixCache? _prefix;

    /// <summary>What the manager knows of a live sequence: the tokens reserved for it, and the names of its full blocks so far.</summary>
    private sealed class Held(int reservedTokens, List<UInt128> names)
    {
        public int ReservedTokens { get; set; } = reservedTokens;
        public List<UInt128> Names { get; } = names;

        /// <summary>The block whose snapshot this sequence took while generating (only the deepest one is kept).</summary>
        public UInt128? GenerationSnapshot { get; set; }
    }

    /// <param name="slots">Sequences that may hold a cache at once (running ones, forks included).</param>
    /// <param name="maxSequenceTokens">Longest sequence: sizes the block tables.</param>
    /// <param name="prefixCacheIdentity">Turns prefix caching on: everything besides the tokens that changes the cache (model, layout).</param>
    public HybridCacheManager(CacheLayout layout, long budgetBytes, int slots, int maxSequenceTokens, Device device, string? prefixCacheIdentity = null)
    {
        Layout = layout;
        BudgetBytes = budgetBytes;
        TotalBlocks = layout.BlockBytes == 0 ? 0 : (int)Math.Min(int.MaxValue, budgetBytes / layout.BlockBytes);
        var caching = prefixCacheIdentity is not null && TotalBlocks > 0;
        // Snapshot slots: up to a quarter of the budget (16 per running slot at most, 2 at least). Each one in use is
        // charged to the budget; the pools are allocated zeroed, so on the CPU an unused slot costs address space only.
        var snapshots = caching && layout.SlotBytes > 0
            ? (int)Math.Max(2L * slots, Math.Min(16L * slots, budgetBytes / 4 / layout.SlotBytes))
            : 0;
        _storage = new CacheStorage(layout, TotalBlocks, slots, Math.Max(1, layout.BlocksFor(maxSequenceTokens + 1)), device, snapshots);
        _references = new int[TotalBlocks];
        if (caching)
        {
            _prefix = new PrefixCache(new BlockHasher(prefixCacheIdentity!, layout.BlockSize), TotalBlocks, slots, _storage.SnapshotCount);
        }
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

    /// <summary>Prefix caching is on and can work (the model has full-attention KV blocks to name).</summary>
    public bool PrefixCaching => _prefix is not null;

    /// <summary>
    /// Prefill chunks should end at multiples of this many tokens so that snapshots can be taken there (models with
    /// rings or Mamba state, prefix caching on); 0 when any block boundary will do.
    /// </summary>
    public int SnapshotInterval { get; init; } = 256;

    private bool TakesSnapshots => _prefix is not null && _storage.SnapshotCount > 0;

    /// <summary>Bytes held now: blocks not free (cached idle ones included), live sequences' fixed state, snapshots.</summary>
    public long BytesInUse => (long)(TotalBlocks - FreeBlocks) * Layout.BlockBytes + (long)(_held.Count + (_prefix?.Snapshots ?? 0)) * Layout.SlotBytes;

    /// <summary>What eviction could give back: idle cached blocks and their snapshots.</summary>
    private long EvictableBytes => _prefix is null ? 0 : (long)_prefix.IdleBlocks * Layout.BlockBytes + (long)_prefix.IdleSnapshots * Layout.SlotBytes;

    /// <summary>Could a sequence of <paramref name="tokens"/> tokens ever fit, with nothing else running?</summary>
    public bool CouldEverFit(int tokens) => Layout.SequenceBytes(tokens) <= BudgetBytes && BlocksNeeded(tokens) <= Math.Max(TotalBlocks, 0);

    private int BlocksNeeded(int tokens) => Layout.BlockBytes == 0 ? 0 : Layout.BlocksFor(tokens);

    /// <summary>
    /// Evicts idle cached prefixes (least recently released first), then drops snapshots of prefixes still in use,
    /// until <paramref name="blocks"/> blocks and <paramref name="bytes"/> bytes are free; false if they cannot be.
    /// </summary>
    private bool MakeRoom(int blocks, long bytes)
    {
        var idle = _prefix?.IdleBlocks ?? 0;
        // Idle blocks can be evicted and every snapshot dropped (those of idle blocks go with them).
        var droppable = (long)idle * Layout.BlockBytes + (long)(_prefix?.Snapshots ?? 0) * Layout.SlotBytes;
        if (blocks > FreeBlocks + idle || BytesInUse - droppable + bytes > BudgetBytes)
        {
            return false;
        }
        while (blocks > FreeBlocks || BytesInUse + bytes > BudgetBytes)
        {
            if (_prefix!.IdleBlocks > 0)
            {
                _freeBlocks.Push(_prefix.EvictOne());
            }
            else if (!_prefix.DropBusySnapshot())
            {
                return false;
            }
        }
        return true;
    }

    private int TakeBlock()
    {
        var block = _freeBlocks.Pop();
        _references[block] = 1;
        return block;
    }

    /// <summary>One more user of a block someone already holds or the prefix cache keeps (an idle one leaves the eviction order).</summary>
    private void Pin(int block)
    {
        if (_references[block]++ == 0)
        {
            _prefix!.MarkUsed(block);
        }
    }

    private void Share(SequenceCache cache, int block)
    {
        Pin(block);
        cache.AddBlock(block);
    }

    private void Unshare(int block)
    {
        if (--_references[block] > 0)
        {
            return;
        }
        if (_prefix is not null && _prefix.IsNamed(block))
        {
            _prefix.MarkIdle(block);
        }
        else
        {
            _freeBlocks.Push(block);
        }
    }

    /// <summary>
    /// A new sequence with room for <paramref name="tokens"/> tokens, or null when memory or slots do not allow. With
    /// <paramref name="headroomBlocks"/>, that many blocks must stay free afterwards (for running sequences to grow).
    /// With prefix caching and <paramref name="prompt"/>, it starts from the longest cached prefix of the prompt that
    /// it can resume (its <see cref="SequenceCache.Length"/> says how many tokens need no computing).
    /// </summary>
    public SequenceCache? TryAdmit(int tokens, int headroomBlocks = 0, IReadOnlyList<int>? prompt = null)
    {
        var (shared, names, snapshot) = prompt is not null && _prefix is not null ? LongestPrefix(prompt) : (new List<int>(), new List<UInt128>(), -1);
        var headroom = Layout.BlockBytes == 0 ? 0 : headroomBlocks;
        var blocks = Math.Max(0, BlocksNeeded(tokens) - shared.Count);
        // Taken before making room, so that making room cannot evict them; given back if admission fails.
        foreach (var block in shared)
        {
            Pin(block);
        }
        if (_freeSlots.Count == 0 || !MakeRoom(blocks + headroom, Layout.SlotBytes + (long)(blocks + headroom) * Layout.BlockBytes))
        {
            foreach (var block in shared)
            {
                Unshare(block);
            }
            return null;
        }
        var cache = new SequenceCache(_storage, _freeSlots.Pop());
        foreach (var block in shared)
        {
            cache.AddBlock(block);
        }
        for (var i = 0; i < blocks; i++)
        {
            cache.AddBlock(TakeBlock());
        }
        if (snapshot >= 0)
        {
            _storage.CopySlot(snapshot, cache.Slot);
        }
        else
        {
            _storage.ResetSlot(cache.Slot);
        }
        cache.ResumeAt(shared.Count * Layout.BlockSize);
        _held[cache] = new Held(tokens, names);
        if (prompt is not null && _prefix is not null)
        {
            _prefix.QueriedTokens += prompt.Count;
            _prefix.HitTokens += cache.Length;
        }
        return cache;
    }

    /// <summary>
    /// The cached blocks a prompt can resume from: the longest run of named blocks (never the whole prompt: its last
    /// token must be computed for its logits), cut back to the deepest one with a snapshot when the model has rings or
    /// Mamba state; with their names and the snapshot slot (-1: none).
    /// </summary>
    private (List<int> Blocks, List<UInt128> Names, int Snapshot) LongestPrefix(IReadOnlyList<int> prompt)
    {
        var prefix = _prefix!;
        var blocks = new List<int>();
        var names = new List<UInt128>();
        var usable = 0;
        var snapshot = -1;
        UInt128? previous = null;
        for (var i = 0; i < (prompt.Count - 1) / Layout.BlockSize; i++)
        {
            var name = prefix.Hasher.Next(previous, prompt, i);
            if (!prefix.TryGetBlock(name, out var block))
            {
                break;
            }
            blocks.Add(block);
            names.Add(name);
            previous = name;
            if (!TakesSnapshots)
            {
                usable = blocks.Count;
            }
            else if (prefix.TryGetSnapshot(name, out var slot))
            {
                usable = blocks.Count;
                snapshot = slot;
            }
        }
        return (blocks[..usable], names[..usable], snapshot);
    }

    /// <summary>
    /// After a forward: names the blocks <paramref name="cache"/> has filled (prefix caching), and at a snapshot point
    /// (see <see cref="IsSnapshotPoint"/>) keeps a copy of its rings and Mamba state, evicting an idle one if needed.
    /// While generating, every block boundary is one, and the sequence's previous generation snapshot is dropped: a
    /// finished answer leaves one at its last full block, where the next turn of the conversation resumes.
    /// </summary>
    public void Filled(SequenceCache cache, IReadOnlyList<int> tokens, int promptLength)
    {
        if (_prefix is null || !_held.TryGetValue(cache, out var held))
        {
            return;
        }
        var size = Layout.BlockSize;
        var full = Math.Min(cache.Length, tokens.Count) / size;
        while (held.Names.Count < full)
        {
            var index = held.Names.Count;
            var name = _prefix.Hasher.Next(index == 0 ? null : held.Names[index - 1], tokens, index);
            held.Names.Add(name);
            _prefix.Name(cache.Blocks[index], name);
        }
        if (!TakesSnapshots || cache.Length % size != 0 || full == 0)
        {
            return;
        }
        var generating = cache.Length > promptLength;
        if (!generating && !IsSnapshotPoint(cache.Length, promptLength))
        {
            return;
        }
        var last = held.Names[full - 1];
        if (_prefix.HasSnapshot(last) || !_prefix.TryGetBlock(last, out _))
        {
            return;
        }
        if (generating && held.GenerationSnapshot is { } superseded)
        {
            // While generating, only the deepest boundary is kept: where the conversation's next turn will resume.
            _prefix.RemoveSnapshot(superseded);
            held.GenerationSnapshot = null;
        }
        if (!_prefix.HasFreeSnapshot && !EvictForSnapshot())
        {
            return; // every snapshot belongs to a prefix in use: this one goes without
        }
        if (BytesInUse + Layout.SlotBytes - EvictableBytes > BudgetBytes)
        {
            return;
        }
        var slot = _prefix.TakeSnapshotSlot();
        _storage.CopySlot(cache.Slot, slot);
        _prefix.AddSnapshot(last, slot);
        if (generating)
        {
            held.GenerationSnapshot = last;
        }
        while (BytesInUse > BudgetBytes && _prefix.IdleBlocks > 0)
        {
            _freeBlocks.Push(_prefix.EvictOne());
        }
    }

    private bool EvictForSnapshot()
    {
        while (!_prefix!.HasFreeSnapshot && _prefix.IdleBlocks > 0)
        {
            _freeBlocks.Push(_prefix.EvictOne());
        }
        return _prefix.HasFreeSnapshot;
    }

    /// <summary>
    /// Where snapshots are taken in a prompt: every <see cref="SnapshotInterval"/> tokens (a shared system prompt, a
    /// long shared document), and its last block boundary when a chunk happens to end there. While generating,
    /// every block boundary (see <see cref="Filled"/>): the next turn of a conversation resumes after the answer.
    /// </summary>
    public bool IsSnapshotPoint(int position, int promptLength) =>
        position <= promptLength && (position == promptLength / Layout.BlockSize * Layout.BlockSize || position % SnapshotInterval == 0);

    /// <summary>
    /// How many of the next tokens a prefill chunk may take so that it ends on the sequence's next interval point
    /// inside its prompt (int.MaxValue when none is ahead or none is needed). Chunks are not cut at the prompt's last
    /// block boundary: on the conversation benchmark that extra step made the last turn's time to first token 0.45×
    /// the uncached one instead of 0.25×, and the answer's own snapshot is where the next turn resumes anyway.
    /// </summary>
    public int TokensToNextSnapshotPoint(int computed, int promptLength)
    {
        if (!TakesSnapshots)
        {
            return int.MaxValue;
        }
        var lastBoundary = promptLength / Layout.BlockSize * Layout.BlockSize;
        var next = (computed / SnapshotInterval + 1) * SnapshotInterval;
        var point = next < lastBoundary ? next : int.MaxValue;
        return point == int.MaxValue ? int.MaxValue : point - computed;
    }

    /// <summary>
    /// A copy of <paramref name="parent"/> (KV rows, window rings, Mamba state) with room for
    /// <paramref name="tokens"/> + 1 tokens, or null when memory does not allow: n > 1 choices share the prompt's
    /// prefill. The parent's full blocks are shared, not copied (nobody writes to a full block again); its partly
    /// filled last block is copied.
    /// </summary>
    public SequenceCache? TryFork(SequenceCache parent, int tokens)
    {
        var full = Layout.BlockBytes == 0 ? 0 : parent.Length / Layout.BlockSize;
        var blocks = Math.Max(0, BlocksNeeded(tokens + 1) - full);
        if (_freeSlots.Count == 0 || !MakeRoom(blocks, Layout.SlotBytes + (long)blocks * Layout.BlockBytes))
        {
            return null;
        }
        var child = new SequenceCache(_storage, _freeSlots.Pop());
        for (var i = 0; i < full; i++)
        {
            Share(child, parent.Blocks[i]);
        }
        for (var i = 0; i < blocks; i++)
        {
            child.AddBlock(TakeBlock());
        }
        if (Layout.BlockBytes > 0 && parent.Length % Layout.BlockSize != 0)
        {
            _storage.CopyBlock(parent.Blocks[full], child.Blocks[full]);
        }
        _storage.CopySlot(parent.Slot, child.Slot);
        child.ContinueFrom(parent);
        var names = _held.TryGetValue(parent, out var held) ? held.Names.Take(full).ToList() : [];
        _held[child] = new Held(tokens + 1, names);
        return child;
    }

    /// <summary>Makes room for the sequence to hold <paramref name="tokens"/> tokens; false when blocks ran out.</summary>
    public bool TryReserve(SequenceCache cache, int tokens)
    {
        var missing = Math.Max(0, BlocksNeeded(tokens) - cache.Blocks.Count);
        if (missing > 0 && !MakeRoom(missing, (long)missing * Layout.BlockBytes))
        {
            return false;
        }
        for (var i = 0; i < missing; i++)
        {
            cache.AddBlock(TakeBlock());
        }
        var held = _held[cache];
        held.ReservedTokens = Math.Max(held.ReservedTokens, tokens);
        return true;
    }

    /// <summary>Returns a sequence's blocks (named ones stay cached until evicted) and slot to the budget.</summary>
    public void Release(SequenceCache cache)
    {
        if (!_held.Remove(cache))
        {
            return;
        }
        // Deepest first: of a released chain, its end is evicted before its start.
        for (var i = cache.Blocks.Count - 1; i >= 0; i--)
        {
            Unshare(cache.Blocks[i]);
        }
        _freeSlots.Push(cache.Slot);
    }

    public CacheUsage Usage()
    {
        var idle = _prefix?.IdleBlocks ?? 0;
        var blocksInUse = TotalBlocks - FreeBlocks - idle;
        var sequences = _held.Count;
        var snapshots = _prefix?.Snapshots ?? 0;
        return new CacheUsage(
            blocksInUse * Layout.BlockBytes,
            sequences * Layout.WindowSlotBytes,
            sequences * Layout.MambaSlotBytes,
            _held.Values.Sum(h => Layout.SequenceBytesWithoutReplacement(h.ReservedTokens)),
            BudgetBytes,
            blocksInUse,
            TotalBlocks,
            sequences)
        {
            Prefix = _prefix is null ? PrefixCacheUsage.None : new PrefixCacheUsage(
                (long)_prefix.NamedBlocks * Layout.BlockBytes, (long)snapshots * Layout.WindowSlotBytes, (long)snapshots * Layout.MambaSlotBytes,
                _prefix.NamedBlocks, snapshots, _prefix.QueriedTokens, _prefix.HitTokens, _prefix.EvictedBlocks),
        };
    }

    public void Dispose() => _storage.Dispose();
}
