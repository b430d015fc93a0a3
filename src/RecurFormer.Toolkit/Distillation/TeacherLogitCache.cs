using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Stage 2's teacher targets, computed once and reused: the teacher's top-k next-token log-probabilities of every
/// training sequence, in shards of sequences of the (deterministic) training stream. A shard is
/// written when all its sequences have been seen; later runs over the same teacher, data, lengths and seed (another
/// learning rate, another student of the same teacher, a resumed run) read it instead of running the teacher. The
/// folder holds one sub-folder per such key. Per token: k float32 log-probabilities and k int32 token ids.
/// Safe to share between the workers of a run (<see cref="DistillTeam"/>): one reader or writer at a time.
/// </summary>
public sealed class TeacherLogitCache
{
    private readonly string _folder;
    private readonly int _k;
    private readonly int _shardSize;
    private readonly Dictionary<long, (float[] LogProbs, int[] Ids, int Tokens)[]> _loaded = [];
    private readonly Dictionary<long, (float[] LogProbs, int[] Ids, int Tokens)?[]> _pending = [];
    private readonly Lock _lock = new();

    /// <param name="key">Everything the targets depend on (teacher, its dtype, data, lengths, seed); hashed into the sub-folder name.</param>
    /// <param name="shardSize">Sequences per shard file (by default the shuffling block of <see cref="TrainingSequences"/>).</param>
    public TeacherLogitCache(string folder, string key, int k, int shardSize = 256)
    {
        _k = k;
        _shardSize = shardSize;
        _folder = Path.Combine(folder, Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes($"{key}|k={k}")))[..16].ToLowerInvariant());
        Directory.CreateDirectory(_folder);
        File.WriteAllText(Path.Combine(_folder, "key.txt"), $"{key}|k={k}\n");
    }

    public int K => _k;

    /// <summary>Sequences whose targets came from the cache, and those computed, so far.</summary>
    public long Hits { get; private set; }
    public long Misses { get; private set; }

    /// <summary>The cached targets of sequence <paramref name="index"/> of the stream: log-probabilities [tokens, k], ids [tokens, k].</summary>
    public bool TryGet(long index, out Tensor logProbs, out Tensor ids)
    {
        using var _ = _lock.EnterScope();
        var shard = index / _shardSize;
        if (!_loaded.TryGetValue(shard, out var entries))
        {
            var path = ShardPath(shard);
            entries = File.Exists(path) ? Read(path) : [];
            _loaded[shard] = entries;
            if (_loaded.Count > 2)
            {
                _loaded.Remove(_loaded.Keys.Min()); // the stream moves forward: keep the current shards only
            }
        }
        var slot = (int)(index % _shardSize);
        if (slot >= entries.Length)
        {
            (logProbs, ids) = (null!, null!);
            Misses++;
            return false;
        }
        var (values, tokenIds, tokens) = entries[slot];
        logProbs = tensor(values).view(tokens, _k);
        ids = tensor(tokenIds).view(tokens, _k).to_type(ScalarType.Int64);
        Hits++;
        return true;
    }

    /// <summary>Records the targets of sequence <paramref name="index"/>; writes its shard once all of it is known.</summary>
    public void Put(long index, Tensor logProbs, Tensor ids)
    {
        using var _ = _lock.EnterScope();
        var shard = index / _shardSize;
        if (_loaded.TryGetValue(shard, out var known) && index % _shardSize < known.Length)
        {
            return; // already written (a step run again after a failure asks for what it had computed)
        }
        if (!_pending.TryGetValue(shard, out var entries))
        {
            _pending[shard] = entries = new (float[], int[], int)?[_shardSize];
        }
        entries[index % _shardSize] = (logProbs.to_type(ScalarType.Float32).contiguous().data<float>().ToArray(),
            ids.to_type(ScalarType.Int32).contiguous().data<int>().ToArray(), (int)logProbs.shape[0]);
        if (entries.All(e => e is not null))
        {
            var written = entries.Select(e => e!.Value).ToArray();
            Write(ShardPath(shard), written);
            _pending.Remove(shard);
            if (_loaded.ContainsKey(shard))
            {
                _loaded[shard] = written; // it was read as missing before it existed
            }
        }
    }

    private string ShardPath(long shard) => Path.Combine(_folder, $"shard-{shard:D6}.bin");

    private void Write(string path, (float[] LogProbs, int[] Ids, int Tokens)[] entries)
    {
        var temporary = path + ".tmp";
        using (var writer = new BinaryWriter(File.Create(temporary)))
        {
            writer.Write(entries.Length);
            foreach (var (logProbs, ids, tokens) in entries)
            {
                writer.Write(tokens);
                writer.Write(MemoryMarshal.AsBytes(logProbs.AsSpan())); // little-endian, as BinaryWriter writes numbers
                writer.Write(MemoryMarshal.AsBytes(ids.AsSpan()));
            }
        }
        File.Move(temporary, path, overwrite: true); // a shard appears whole or not at all
    }

    private (float[] LogProbs, int[] Ids, int Tokens)[] Read(string path)
    {
        using var reader = new BinaryReader(File.OpenRead(path));
        var entries = new (float[], int[], int)[reader.ReadInt32()];
        for (var i = 0; i < entries.Length; i++)
        {
            var tokens = reader.ReadInt32();
            var logProbs = new float[tokens * _k];
            var ids = new int[tokens * _k];
            reader.BaseStream.ReadExactly(MemoryMarshal.AsBytes(logProbs.AsSpan()));
            reader.BaseStream.ReadExactly(MemoryMarshal.AsBytes(ids.AsSpan()));
            entries[i] = (logProbs, ids, tokens);
        }
        return entries;
    }
}
