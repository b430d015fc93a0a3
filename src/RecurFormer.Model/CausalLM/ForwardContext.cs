using RecurFormer.Model.Caching;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// What every layer of one forward shares: the batch, the RoPE tables of its positions, and the cache indices
/// derived from the sequences' block tables and lengths. A batch may mix sequences that bring one token (decoding:
/// attended all at once through the pools) with sequences that bring several (prefill chunks: attended one by one).
/// Each index tensor is built once, the first time a layer asks, and freed when the forward ends (not when the
/// asking layer's dispose scope ends). The decoding sequences' indices come from one small upload ([slot, length,
/// new row, ring row, packed row] per sequence); the gather rows of full attention are computed on the device from
/// the slots' block tables.
/// </summary>
public sealed class ForwardContext : IDisposable
{
    private readonly List<Tensor> _owned = [];
    private readonly Dictionary<string, Tensor> _shared = [];

    public ForwardContext(ForwardBatch batch, Device device, ScalarType dtype)
    {
        Batch = batch;
        Device = device;
        DType = dtype;
        Decoding = Enumerable.Range(0, batch.SequenceCount).Where(s => batch.TokenCount(s) == 1).ToArray();
        Prefilling = Enumerable.Range(0, batch.SequenceCount).Where(s => batch.TokenCount(s) > 1).ToArray();
    }

    /// <summary>Sequences that bring exactly one token, in batch order: attended together.</summary>
    public int[] Decoding { get; }

    /// <summary>Sequences that bring several tokens: attended one at a time.</summary>
    public int[] Prefilling { get; }

    public ForwardBatch Batch { get; }
    public Device Device { get; }
    public ScalarType DType { get; }
    public CacheStorage Storage => Batch.Storage;

    /// <summary>RoPE tables of the packed positions, [T, headDim] in the compute dtype (transformer models).</summary>
    public Tensor? Cos { get; set; }
    public Tensor? Sin { get; set; }

    /// <summary>A tensor that lives until the forward ends.</summary>
    public Tensor Keep(Tensor tensor)
    {
        _owned.Add(tensor.DetachFromDisposeScope());
        return tensor;
    }

    private Tensor Shared(string key, Func<Tensor> build)
    {
        if (!_shared.TryGetValue(key, out var tensor))
        {
            using var scope = NewDisposeScope();
            tensor = Keep(build());
            _shared[key] = tensor;
        }
        return tensor;
    }

    private long[] DecodeTable()
    {
        var window = Storage.Layout.Window;
        var count = Decoding.Length;
        var table = new long[5 * count];
        for (var i = 0; i < count; i++)
        {
            var cache = Batch.Caches[Decoding[i]];
            table[i] = cache.Slot;
            table[count + i] = cache.Length + 1;                          // length once this token is written
            table[2 * count + i] = Storage.Layout.BlockBytes == 0 ? 0 : cache.RowOf(cache.Length);
            table[3 * count + i] = window.Capacity == 0 ? 0 : RingIndex(window, cache.Length);
            table[4 * count + i] = Batch.Offsets[Decoding[i]];
        }
        return table;
    }

    private Tensor Decode => Shared("decode", () => tensor(DecodeTable(), device: Device).view(5, Decoding.Length));

    /// <summary>Packed row of each decoding sequence's token (when the batch mixes decoding and prefill).</summary>
    public Tensor DecodeRows => Shared("decode-rows", () => Decode[4]);

    /// <summary>Decode: each decoding sequence's slot [B].</summary>
    public Tensor Slots => Shared("slots", () => Decode[0]);

    /// <summary>Decode: pool row of each sequence's new token [B].</summary>
    public Tensor NewRows => Shared("new-rows", () => Decode[2]);

    /// <summary>
    /// Decode: where each sequence's new token goes in the rings viewed as rows [slots × groups × capacity, headDim],
    /// [B × groups] in (sequence, group) order.
    /// </summary>
    public Tensor RingRows(int groups) => Shared($"ring-rows-{groups}", () =>
    {
        var capacity = Storage.Layout.Window.Capacity;
        var first = Slots * (groups * capacity) + Decode[3];                                              // group 0 of each slot
        return (first.unsqueeze(1) + arange(groups, device: Device).unsqueeze(0) * capacity).view(-1);
    });

    /// <summary>
    /// Decode, full attention: pool rows of every sequence's positions padded to the longest, [B × L], and where
    /// they are real, [B, 1, 1, L] (the query's own position included).
    /// </summary>
    public (Tensor Rows, Tensor Mask) KeyRows
    {
        get
        {
            var size = Storage.Layout.BlockSize;
            var longest = Decoding.Max(s => Batch.Caches[s].Length) + 1;
            var blocks = (longest + size - 1) / size;
            var rows = Shared("key-rows", () =>
            {
                var table = Storage.BlockTables.index_select(0, Slots).narrow(1, 0, blocks);             // [B, blocks]
                return (table.unsqueeze(2) * size + arange(size, device: Device)).view(-1);              // [B × blocks × size]
            });
            var mask = Shared("key-mask", () =>
                (arange(blocks * size, device: Device).unsqueeze(0) < Decode[1].unsqueeze(1)).view(Decoding.Length, 1, 1, -1));
            return (rows, mask);
        }
    }

    /// <summary>Decode, windowed groups: which ring entries each sequence has filled, [B, 1, 1, capacity].</summary>
    public Tensor RingMask => Shared("ring-mask", () =>
        (arange(Storage.Layout.Window.Capacity, device: Device).unsqueeze(0) < Decode[1].unsqueeze(1)).view(Decoding.Length, 1, 1, -1));

    /// <summary>Pool rows of positions [from, to) of one sequence.</summary>
    public Tensor RowsOf(int sequence, int from, int to) => Shared($"rows-{sequence}-{from}-{to}", () =>
    {
        var cache = Batch.Caches[sequence];
        var rows = new long[to - from];
        for (var p = from; p < to; p++)
        {
            rows[p - from] = cache.RowOf(p);
        }
        return tensor(rows, device: Device);
    });

    /// <summary>Index of position <paramref name="position"/> in a ring: sinks first, then the window, circularly.</summary>
    public static int RingIndex(Configuration.WindowSpec window, int position) =>
        position < window.Sinks ? position : window.Sinks + (position - window.Sinks) % window.Size;

    /// <summary>The position held at ring index <paramref name="index"/> once <paramref name="length"/> tokens are written (−1: none).</summary>
    public static int RingPosition(Configuration.WindowSpec window, int index, int length)
    {
        if (index >= length)
        {
            return -1;
        }
        if (index < window.Sinks)
        {
            return index;
        }
        var j = index - window.Sinks;
        return window.Sinks + j + window.Size * ((length - 1 - window.Sinks - j) / window.Size);
    }

    public void Dispose()
    {
        foreach (var tensor in _owned)
        {
            tensor.Dispose();
        }
        _owned.Clear();
        _shared.Clear();
    }
}
