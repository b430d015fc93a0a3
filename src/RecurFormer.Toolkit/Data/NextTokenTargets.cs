namespace RecurFormer.Toolkit.Data;

/// <summary>
/// For sequences packed one after another (as a forward with AllLogits returns their logits), the rows whose
/// logits predict a next token within the same sequence, and that token.
/// </summary>
public static class NextTokenTargets
{
    public static (long[] Rows, long[] Targets) Of(IEnumerable<long[]> sequences)
    {
        var rows = new List<long>();
        var targets = new List<long>();
        var offset = 0;
        foreach (var sequence in sequences)
        {
            for (var i = 0; i + 1 < sequence.Length; i++)
            {
                rows.Add(offset + i);
                targets.Add(sequence[i + 1]);
            }
            offset += sequence.Length;
        }
        return (rows.ToArray(), targets.ToArray());
    }
}
