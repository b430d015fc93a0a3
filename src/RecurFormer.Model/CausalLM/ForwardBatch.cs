using RecurFormer.Model.Caching;
using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// One forward over several sequences at once: the new tokens of every sequence, concatenated ("packed", no
/// padding), with each sequence's cache (all in one <see cref="CacheStorage"/>). A sequence may bring many tokens
/// (prefill, or a chunk of it) or one (decode); its positions continue from <see cref="SequenceCache.Length"/>.
/// </summary>
public sealed class ForwardBatch
{
    public ForwardBatch(IReadOnlyList<long[]> tokens, IReadOnlyList<SequenceCache> caches)
    {
        if (tokens.Count != caches.Count || tokens.Count == 0)
        {
            throw new ArgumentException("one token list per cache, and at least one sequence");
        }
        if (tokens.Any(t => t.Length == 0))
        {
            throw new ArgumentException("every sequence needs at least one new token");
        }
        if (caches.Any(c => c.Storage != caches[0].Storage))
        {
            throw new ArgumentException("the sequences of one batch must share one cache storage (create their caches together)");
        }
        if (caches.Distinct().Count() != caches.Count)
        {
            throw new ArgumentException("a sequence cache appears twice in the batch");
        }
        Tokens = tokens;
        Caches = caches;
        Offsets = new int[tokens.Count + 1];
        for (var i = 0; i < tokens.Count; i++)
        {
            Offsets[i + 1] = Offsets[i] + tokens[i].Length;
            var needed = caches[i].Length + tokens[i].Length;
            if (needed > caches[i].Capacity)
            {
                throw new InvalidOperationException($"sequence {i} holds blocks for {caches[i].Capacity} tokens, {needed} needed: reserve blocks first");
            }
        }
    }

    public IReadOnlyList<long[]> Tokens { get; }
    public IReadOnlyList<SequenceCache> Caches { get; }
    public CacheStorage Storage => Caches[0].Storage;

    /// <summary>Start of each sequence's tokens in the packed batch; the last entry is the total.</summary>
    public int[] Offsets { get; }

    public int SequenceCount => Tokens.Count;
    public int TotalTokens => Offsets[^1];
    public int TokenCount(int sequence) => Tokens[sequence].Length;

    /// <summary>True when every sequence brings exactly one token: the batched decode path.</summary>
    public bool IsDecode => TotalTokens == SequenceCount;

    /// <summary>Logits for every token (perplexity, tests); otherwise only for each sequence's last token.</summary>
    public bool AllLogits { get; init; }

    /// <summary>
    /// Sequences that want logits for every one of their tokens (prompt logprobs) while the others want only their
    /// last; null = as <see cref="AllLogits"/> says for all.
    /// </summary>
    public IReadOnlyList<bool>? AllLogitsOf { get; init; }

    /// <summary>When set, layers record what it asks for (attention probabilities, layer inputs and head outputs).</summary>
    public AttentionCapture? Capture { get; init; }

    /// <summary>
    /// Run the decoder layers up to this one's attention heads only and return its head outputs [T, heads × headDim]
    /// (before o_proj) instead of logits (the caches do not advance; Transformer models): distillation's stage 1 needs
    /// the teacher only up to the attention of the last replaced layer, whose inputs and head outputs it reads from the
    /// capture (o_proj, the residual and the MLP would feed only layers that do not run).
    /// </summary>
    public int? LastLayer { get; init; }

    /// <summary>When set, the forward leaves there the residual stream entering that handoff's layer (the teacher's, in distillation).</summary>
    public ResidualHandoff? LeaveResidual { get; init; }

    /// <summary>
    /// When set, the forward skips the embedding and the layers below the handoff's layer and starts from the stream
    /// another model's forward of the same tokens left there (Transformer models whose layers below are the same).
    /// </summary>
    public ResidualHandoff? StartFrom { get; init; }

    /// <summary>
    /// Return the logits in the dtype the LM head computed them in (bfloat16 for a bfloat16 model) rather than float32:
    /// distillation's loss kernels read bfloat16 rows themselves, which spares a [T, V] conversion each way.
    /// </summary>
    public bool LogitsAsComputed { get; init; }

    /// <summary>Keep the autograd graph (distillation); inference runs without it.</summary>
    public bool Training { get; init; }

    /// <summary>Threads for the CPU kernels (the engine's pool); null: <see cref="KernelThreads.ForThisProcess"/>.</summary>
    public KernelThreads? Threads { get; init; }

    /// <summary>The kernel threads this forward uses.</summary>
    public KernelThreads KernelThreads => Threads ?? KernelThreads.ForThisProcess;

    /// <summary>When set, a kernel decode step records where its time goes (benchmarks).</summary>
    public KernelProfile? Profile { get; init; }

    /// <summary>Whether sequence <paramref name="sequence"/> gets a logits row for every token.</summary>
    public bool WantsAllLogits(int sequence) => AllLogits || (AllLogitsOf?[sequence] ?? false);

    /// <summary>Packed rows whose logits are returned, in order: every token of sequences that want all, else the last.</summary>
    public long[] LogitRows()
    {
        var rows = new List<long>();
        for (var s = 0; s < SequenceCount; s++)
        {
            if (WantsAllLogits(s))
            {
                for (var row = Offsets[s]; row < Offsets[s + 1]; row++)
                {
                    rows.Add(row);
                }
            }
            else
            {
                rows.Add(Offsets[s + 1] - 1);
            }
        }
        return [.. rows];
    }

    /// <summary>Positions of the packed tokens: each sequence continues from its cache length.</summary>
    public long[] Positions()
    {
        var positions = new long[TotalTokens];
        for (var s = 0; s < SequenceCount; s++)
        {
            for (var i = 0; i < TokenCount(s); i++)
            {
                positions[Offsets[s] + i] = Caches[s].Length + i;
            }
        }
        return positions;
    }

    public long[] PackedTokens() => Tokens.SelectMany(t => t).ToArray();
}

/// <summary>
/// What an instrumented forward records, per layer: the attention block's input (the normalised hidden state)
/// and the head outputs that feed o_proj ([T, heads × headDim], original head order) when <see cref="RecordsLayers"/>,
/// and the attention probabilities of plain layers ([heads, queries, keys], float32 on the CPU) when
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
