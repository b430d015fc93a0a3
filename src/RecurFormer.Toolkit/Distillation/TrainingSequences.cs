using RecurFormer.Tokenization;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Training sequences: the texts tokenized into one stream (as the teacher was trained), cut into sequences of a
/// fixed length, shuffled within blocks by a seeded generator. Deterministic: the k-th sequence is the same on
/// every run with the same file, length and seed, which is what lets a resumed run skip what it has seen.
/// </summary>
public sealed class TrainingSequences(IEnumerable<string> texts, CheckpointTokenizer tokenizer, int length, long seed, int blockSize = 256) : IDisposable
{
    private IEnumerator<long[]>? _source;

    /// <summary>Sequences handed out so far.</summary>
    public long Consumed { get; private set; }

    public long[] Next()
    {
        _source ??= Shuffled().GetEnumerator();
        if (!_source.MoveNext())
        {
            throw new InvalidOperationException($"the training data ran out after {Consumed} sequences of {length} tokens");
        }
        Consumed++;
        return _source.Current;
    }

    /// <summary>Skips <paramref name="count"/> sequences (resuming a run).</summary>
    public void Skip(long count)
    {
        for (long i = 0; i < count; i++)
        {
            Next();
        }
    }

    private IEnumerable<long[]> Shuffled()
    {
        var random = new Random((int)(seed ^ (seed >> 32)));
        var block = new List<long[]>(blockSize);
        foreach (var sequence in Cut())
        {
            block.Add(sequence);
            if (block.Count == blockSize)
            {
                foreach (var item in Shuffle(block, random))
                {
                    yield return item;
                }
                block.Clear();
            }
        }
        foreach (var item in Shuffle(block, random))
        {
            yield return item;
        }
    }

    private static List<long[]> Shuffle(List<long[]> block, Random random)
    {
        var copy = block.ToList();
        for (var i = copy.Count - 1; i > 0; i--)
        {
            var j = random.Next(i + 1);
            (copy[i], copy[j]) = (copy[j], copy[i]);
        }
        return copy;
    }

    private IEnumerable<long[]> Cut()
    {
        var buffer = new List<long>(length * 2);
        foreach (var text in texts)
        {
            buffer.AddRange(tokenizer.Encode(text, addBosToken: false).Select(id => (long)id));
            while (buffer.Count >= length)
            {
                yield return buffer.GetRange(0, length).ToArray();
                buffer.RemoveRange(0, length);
            }
        }
    }

    public void Dispose() => _source?.Dispose();
}
