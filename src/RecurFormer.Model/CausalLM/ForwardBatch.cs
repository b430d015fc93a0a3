using RecurFormer.Model.Caching;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// One forward over several sequences at once: the new tokens of every sequence, concatenated ("packed", no
/// padding), with each sequence's cache. A sequence may bring many tokens (prefill, or a chunk of it) or one (decode);
/// its positions continue from <see cref="ISequenceCache.Length"/>.
/// </summary>
public sealed class ForwardBatch
{
    public ForwardBatch(IReadOnlyList<long[]> tokens, IReadOnlyList<ISequenceCache> caches)
    {
        if (tokens.Count != caches.Count || tokens.Count == 0)
        {
            throw new ArgumentException("one token list per cache, and at least one sequence");
        }
        if (tokens.Any(t => t.Length == 0))
        {
            throw new ArgumentException("every sequence needs at least one new token");
        }
        Tokens = tokens;
        Caches = caches;
        Offsets = new int[tokens.Count + 1];
        for (var i = 0; i < tokens.Count; i++)
        {
            Offsets[i + 1] = Offsets[i] + tokens[i].Length;
        }
    }

    public IReadOnlyList<long[]> Tokens { get; }
    public IReadOnlyList<ISequenceCache> Caches { get; }

    /// <summary>Start of each sequence's tokens in the packed batch; the last entry is the total.</summary>
    public int[] Offsets { get; }

    public int SequenceCount => Tokens.Count;
    public int TotalTokens => Offsets[^1];
    public int TokenCount(int sequence) => Tokens[sequence].Length;

    /// <summary>True when every sequence brings exactly one token: the batched decode path.</summary>
    public bool IsDecode => TotalTokens == SequenceCount;

    /// <summary>Logits for every token (perplexity, tests); otherwise only for each sequence's last token.</summary>
    public bool AllLogits { get; init; }

    /// <summary>When set, attention runs eagerly and records its probabilities here (recency analysis, tests).</summary>
    public AttentionCapture? Capture { get; init; }

    /// <summary>Positions of the packed tokens: each sequence continues from its cache length.</summary>
    public Tensor Positions(Device device)
    {
        var positions = new long[TotalTokens];
        for (var s = 0; s < SequenceCount; s++)
        {
            for (var i = 0; i < TokenCount(s); i++)
            {
                positions[Offsets[s] + i] = Caches[s].Length + i;
            }
        }
        return tensor(positions, device: device);
    }

    public Tensor TokenTensor(Device device) => tensor(Tokens.SelectMany(t => t).ToArray(), device: device);

    /// <summary>Row indices of the packed tokens whose logits are wanted.</summary>
    public Tensor LogitRows(Device device) => AllLogits
        ? arange(TotalTokens, device: device)
        : tensor(Offsets.Skip(1).Select(end => (long)end - 1).ToArray(), device: device);
}

/// <summary>Attention probabilities recorded by an eager forward: per layer, per sequence, [heads, queries, keys] on the CPU.</summary>
public sealed class AttentionCapture : IDisposable
{
    private readonly Dictionary<(int Layer, int Sequence), Tensor> _probabilities = [];

    public void Record(int layer, int sequence, Tensor probabilities) =>
        _probabilities[(layer, sequence)] = probabilities.detach().to(ScalarType.Float32, CPU).DetachFromDisposeScope();

    public Tensor Get(int layer, int sequence = 0) => _probabilities[(layer, sequence)];

    public void Dispose()
    {
        foreach (var tensor in _probabilities.Values)
        {
            tensor.Dispose();
        }
        _probabilities.Clear();
    }
}
