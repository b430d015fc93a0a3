using RecurFormer.Tokenization;

namespace RecurFormer.Toolkit.Analysis;

/// <summary>Calibration sequences for the analysis: the data's texts tokenized into one stream, cut into windows.</summary>
public static class CalibrationText
{
    /// <summary>
    /// <paramref name="samples"/> windows of <paramref name="length"/> tokens spread evenly over the token stream of
    /// <paramref name="texts"/> (in file order), as the teacher's training report measured recency.
    /// </summary>
    public static IReadOnlyList<long[]> Windows(IEnumerable<string> texts, CheckpointTokenizer tokenizer, int length, int samples)
    {
        var stream = new List<long>();
        foreach (var text in texts)
        {
            stream.AddRange(tokenizer.Encode(text, addBosToken: false).Select(id => (long)id));
        }
        if (stream.Count < length)
        {
            throw new AnalysisFileException($"the data holds only {stream.Count} tokens, fewer than one sequence of {length}");
        }
        var available = stream.Count / length;
        var count = Math.Min(samples, available);
        var stride = (double)available / count;
        return Enumerable.Range(0, count)
            .Select(i => stream.GetRange((int)(i * stride) * length, length).ToArray())
            .ToArray();
    }
}
