using RecurFormer.Tokenization;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Training sequences: the texts tokenized into one stream (as the teacher was trained), cut into sequences of a
/// fixed length, shuffled within blocks by a seeded generator; when the texts run out they start again (another
/// epoch, shuffled anew), so a long run never stops for lack of data. Deterministic: the k-th sequence is the same
/// on every run with the same file, length and seed, which is what lets a resumed run skip what it has seen.
/// </summary>
public sealed class TrainingSequences(Func<IEnumerable<string>> texts, CheckpointTokenizer tokenizer, int length, long seed, int blockSize = 256) : IDisposable
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
        for (var epoch = 0; ; epoch++)
        {
            var any = false;
            foreach (var sequence in Cut())
            {
                any = true;
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
            if (!any)
            {
                yield break; // not one sequence of this length in the data: Next says so
            }
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
        foreach (var text in texts())
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
