using RecurFormer.Model.CausalLM;

namespace RecurFormer.Model.Caching;

/// <summary>
/// A cache for a fixed set of sequences, each with room for a fixed number of tokens: what the CLI, the toolkit and
/// the tests use (the engine hands out blocks on demand instead). KV is stored in the compute dtype.
/// </summary>
public sealed class CacheSet : IDisposable
{
    private readonly CacheStorage _storage;

    public CacheSet(ICausalLM model, int sequences, int tokens)
    {
        if (sequences < 1 || tokens < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(sequences), "a cache needs at least one sequence of at least one token");
        }
        var layout = new CacheLayout(model.Config, model.Target.DType);
        var perSequence = layout.BlocksFor(tokens);
        var blocks = layout.BlockBytes == 0 ? 0 : sequences * perSequence;
        _storage = new CacheStorage(layout, blocks, sequences, perSequence, model.Target.Device);
        Sequences = Enumerable.Range(0, sequences).Select(s =>
        {
            var cache = new SequenceCache(_storage, s);
            for (var b = 0; b < perSequence && blocks > 0; b++)
            {
                cache.AddBlock(s * perSequence + b);
            }
            return cache;
        }).ToArray();
    }

    public IReadOnlyList<SequenceCache> Sequences { get; }
    public SequenceCache this[int sequence] => Sequences[sequence];

    public void Dispose() => _storage.Dispose();
}
