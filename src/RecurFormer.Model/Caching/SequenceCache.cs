namespace RecurFormer.Model.Caching;

/// <summary>
/// One sequence's place in a <see cref="CacheStorage"/>: its block table (which pool blocks hold its tokens, in
/// order), its slot (rings and Mamba state) and how many tokens it has processed. The model writes through it; the
/// owner that handed it out adds blocks before a forward needs them.
/// </summary>
public sealed class SequenceCache
{
    private readonly List<int> _blocks = [];

    public SequenceCache(CacheStorage storage, int slot)
    {
        Storage = storage;
        Slot = slot;
    }

    public CacheStorage Storage { get; }
    public int Slot { get; }

    /// <summary>Tokens already processed; the next token's position.</summary>
    public int Length { get; private set; }

    public IReadOnlyList<int> Blocks => _blocks;

    /// <summary>Tokens the blocks can hold (unbounded for a model with no full-attention KV).</summary>
    public int Capacity => Storage.Layout.BlockBytes == 0 ? int.MaxValue : _blocks.Count * Storage.Layout.BlockSize;

    public void AddBlock(int block)
    {
        Storage.SetBlock(Slot, _blocks.Count, block);
        _blocks.Add(block);
    }

    /// <summary>Pool row of a position's keys and values.</summary>
    public long RowOf(int position)
    {
        var size = Storage.Layout.BlockSize;
        return (long)_blocks[position / size] * size + position % size;
    }

    /// <summary>Marks <paramref name="tokens"/> more tokens as processed (after every layer has seen them).</summary>
    public void Advance(int tokens) => Length += tokens;

    /// <summary>Starts at <paramref name="length"/> tokens already in the cache (a cached prefix whose blocks and state the owner put in place).</summary>
    public void ResumeAt(int length) => Length = length;

    /// <summary>Starts from another sequence's state (n > 1 forks): its length; blocks and slot state are copied by the owner.</summary>
    public void ContinueFrom(SequenceCache parent) => Length = parent.Length;
}
