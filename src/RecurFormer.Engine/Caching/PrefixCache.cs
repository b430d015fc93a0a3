namespace RecurFormer.Engine.Caching;

/// <summary>What cached prefixes hold: KV blocks with a name, and the snapshots' ring and Mamba bytes; hit counters.</summary>
public sealed record PrefixCacheUsage(long KvBytes, long WindowKvBytes, long MambaStateBytes, int Blocks, int Snapshots, long QueriedTokens, long HitTokens, long EvictedBlocks)
{
    public static PrefixCacheUsage None { get; } = new(0, 0, 0, 0, 0, 0, 0, 0);
}

/// <summary>
/// The index of cached prefixes: which pool block holds the block named by a hash (<see cref="BlockHasher"/>), which
/// snapshot slot holds the rings and Mamba state at the end of that block, and which named blocks no sequence uses
/// (idle, least recently released first: the eviction order). A block a sequence releases keeps its contents and its
/// name until the budget needs it; a request whose prompt starts with named blocks takes them instead of
/// recomputing. A sequence releases its blocks deepest first, so a chain is evicted from its end and what stays
/// cached is always a usable prefix. Owned by <see cref="HybridCacheManager"/>; engine thread only.
/// </summary>
internal sealed class PrefixCache
{
    private readonly Dictionary<UInt128, int> _blockOf = [];
    private readonly UInt128?[] _nameOf;
    private readonly Dictionary<UInt128, int> _snapshotOf = [];
    private readonly LinkedList<int> _idle = new();
    private readonly LinkedListNode<int>?[] _idleNode;
    private readonly Stack<int> _freeSnapshots = new();

    public PrefixCache(BlockHasher hasher, int blocks, int firstSnapshotSlot, int snapshots)
    {
        Hasher = hasher;
        _nameOf = new UInt128?[blocks];
        _idleNode = new LinkedListNode<int>?[blocks];
        for (var slot = firstSnapshotSlot + snapshots - 1; slot >= firstSnapshotSlot; slot--)
        {
            _freeSnapshots.Push(slot);
        }
    }

    public BlockHasher Hasher { get; }
    public int NamedBlocks => _blockOf.Count;
    public int IdleBlocks => _idle.Count;
    public int Snapshots => _snapshotOf.Count;

    /// <summary>Snapshots whose block is idle: evicted with it.</summary>
    public int IdleSnapshots { get; private set; }
    public bool HasFreeSnapshot => _freeSnapshots.Count > 0;
    public long QueriedTokens { get; set; }
    public long HitTokens { get; set; }
    public long EvictedBlocks { get; private set; }

    public bool TryGetBlock(UInt128 name, out int block) => _blockOf.TryGetValue(name, out block);
    public bool TryGetSnapshot(UInt128 name, out int slot) => _snapshotOf.TryGetValue(name, out slot);
    public bool HasSnapshot(UInt128 name) => _snapshotOf.ContainsKey(name);
    public bool IsNamed(int block) => _nameOf[block] is not null;

    /// <summary>Names a block a sequence has just filled, unless another block already holds the same tokens.</summary>
    public void Name(int block, UInt128 name)
    {
        if (_nameOf[block] is null && _blockOf.TryAdd(name, block))
        {
            _nameOf[block] = name;
        }
    }

    /// <summary>Keeps <paramref name="slot"/> (a snapshot slot the caller filled) as the state at the end of the named block.</summary>
    public void AddSnapshot(UInt128 name, int slot)
    {
        _snapshotOf.Add(name, slot);
        if (_blockOf.TryGetValue(name, out var block) && _idleNode[block] is not null)
        {
            IdleSnapshots++;
        }
    }

    public int TakeSnapshotSlot() => _freeSnapshots.Pop();

    /// <summary>
    /// Drops one snapshot whose block is in use (a running sequence's, or a prompt's that a running sequence shares):
    /// snapshots are an optimisation and never keep a new sequence out. False when there is none.
    /// </summary>
    public bool DropBusySnapshot()
    {
        foreach (var (name, _) in _snapshotOf)
        {
            if (!_blockOf.TryGetValue(name, out var block) || _idleNode[block] is null)
            {
                RemoveSnapshot(name);
                return true;
            }
        }
        return false;
    }

    /// <summary>Gives a snapshot's slot back (a sequence's previous decode-time snapshot, superseded by a deeper one).</summary>
    public void RemoveSnapshot(UInt128 name)
    {
        if (!_snapshotOf.Remove(name, out var slot))
        {
            return;
        }
        _freeSnapshots.Push(slot);
        if (_blockOf.TryGetValue(name, out var block) && _idleNode[block] is not null)
        {
            IdleSnapshots--;
        }
    }

    /// <summary>A named block no sequence uses any more: it waits, contents intact, for a hit or an eviction.</summary>
    public void MarkIdle(int block)
    {
        _idleNode[block] = _idle.AddLast(block);
        if (_snapshotOf.ContainsKey(_nameOf[block]!.Value))
        {
            IdleSnapshots++;
        }
    }

    /// <summary>An idle block a new sequence takes: out of the eviction order.</summary>
    public void MarkUsed(int block)
    {
        if (_idleNode[block] is { } node)
        {
            _idle.Remove(node);
            _idleNode[block] = null;
            if (_snapshotOf.ContainsKey(_nameOf[block]!.Value))
            {
                IdleSnapshots--;
            }
        }
    }

    public bool IsIdle(int block) => _idleNode[block] is not null;

    /// <summary>Forgets the least recently released idle block (and its snapshot); returns it, now free, or -1.</summary>
    public int EvictOne()
    {
        if (_idle.First is not { } first)
        {
            return -1;
        }
        var block = first.Value;
        EvictedBlocks++;
        MarkUsed(block);
        var name = _nameOf[block]!.Value;
        _nameOf[block] = null;
        _blockOf.Remove(name);
        if (_snapshotOf.Remove(name, out var slot))
        {
            _freeSnapshots.Push(slot);
        }
        return block;
    }
}
