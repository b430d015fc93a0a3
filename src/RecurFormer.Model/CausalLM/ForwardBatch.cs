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

    /// <summary>When set, layers record what it asks for (attention probabilities, layer inputs and head outputs).</summary>
    public AttentionCapture? Capture { get; init; }

    /// <summary>Keep the autograd graph (distillation); inference runs without it.</summary>
    public bool Training { get; init; }

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

/// <summary>
/// What an instrumented forward records, per layer: the attention block's input (the normalised hidden state)
/// and the head outputs that feed o_proj ([T, heads × headDim]) when <see cref="RecordsLayers"/>, and the
/// attention probabilities of plain layers ([heads, queries, keys], float32 on the CPU) when
/// <see cref="RecordsProbabilities"/> (which makes attention run eagerly). Layer records keep their autograd graph
/// so that distillation can train through them.
/// </summary>
public sealed class AttentionCapture : IDisposable
{
    private readonly Dictionary<(int Layer, int Sequence), Tensor> _probabilities = [];
    private readonly Dictionary<int, (Tensor Input, Tensor Heads)> _layers = [];

    public bool RecordsProbabilities { get; init; } = true;
    public bool RecordsLayers { get; init; }

    public void RecordProbabilities(int layer, int sequence, Tensor probabilities) =>
        _probabilities[(layer, sequence)] = probabilities.detach().to(ScalarType.Float32, CPU).DetachFromDisposeScope();

    public void RecordLayer(int layer, Tensor input, Tensor heads)
    {
        if (!RecordsLayers)
        {
            return;
        }
        if (_layers.Remove(layer, out var old))
        {
            old.Input.Dispose();
            old.Heads.Dispose();
        }
        _layers[layer] = (input.alias().DetachFromDisposeScope(), heads.alias().DetachFromDisposeScope());
    }

    public Tensor Get(int layer, int sequence = 0) => _probabilities[(layer, sequence)];

    /// <summary>The attention input [T, hidden] of a layer.</summary>
    public Tensor LayerInput(int layer) => _layers[layer].Input;

    /// <summary>The head outputs [T, heads × headDim] of a layer, before o_proj.</summary>
    public Tensor HeadOutputs(int layer) => _layers[layer].Heads;

    public void Dispose()
    {
        foreach (var tensor in _probabilities.Values)
        {
            tensor.Dispose();
        }
        foreach (var (input, heads) in _layers.Values)
        {
            input.Dispose();
            heads.Dispose();
        }
        _probabilities.Clear();
        _layers.Clear();
    }
}
