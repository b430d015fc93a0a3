namespace RecurFormer.Toolkit.Evaluation;

/// <summary>Summed negative log-likelihood and token count per key; perplexity = exp(mean NLL).</summary>
public sealed class NllAccumulator
{
    private readonly Dictionary<string, (double Sum, long Count)> _totals = [];

    public void Add(string key, double nll, long tokens)
    {
        var (sum, count) = _totals.GetValueOrDefault(key);
        _totals[key] = (sum + nll, count + tokens);
    }

    public double Perplexity(string key) => _totals.TryGetValue(key, out var t) && t.Count > 0 ? Math.Exp(t.Sum / t.Count) : double.NaN;

    public long Tokens(string key) => _totals.GetValueOrDefault(key).Count;
}
