using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using RecurFormer.Toolkit.Reporting;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>One evaluated model of a trade-off table: what it keeps of the KV cache and what it loses.</summary>
public sealed record TradeOffPoint(string Name, string Kind, double KvKept, double StateBytes, double WindowBytes, double Perplexity, double Packed512, double ExactMatch, double F1);

/// <summary>
/// The trade-off of several conversions of one teacher (KV kept vs perplexity and exact match, window vs Mamba),
/// from the JSON files that <c>recurformer eval</c> wrote: a Markdown table, JSON, and a PNG chart.
/// </summary>
public static class TradeOffTable
{
    public static TradeOffPoint Read(string path)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var result = root["result"]!.AsObject();
        var model = root["model"]?.GetValue<string>() ?? path;
        double Get(string key) => EvalComparison.Get(result, key) ?? double.NaN;
        return new TradeOffPoint(Path.GetFileName(model.TrimEnd('/')), result["kind"]?.GetValue<string>() ?? "?", Get("cache.kv_fraction_kept"), Get("cache.state_bytes_per_sequence"),
            Get("cache.window_bytes_per_sequence"), Get("perplexity.all"), Get("perplexity.packed512"), Get("qa.exact_match"), Get("qa.token_f1"));
    }

    public static string Markdown(TradeOffPoint teacher, IReadOnlyList<TradeOffPoint> points)
    {
        var text = new StringBuilder();
        text.AppendLine("| model | kind | KV kept | fixed state / seq | ppl all | Δ | ppl packed512 | Δ | EM | F1 |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var p in new[] { teacher }.Concat(points))
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {p.Name} | {p.Kind} | {p.KvKept:P0} | {(p.StateBytes + p.WindowBytes) / 1024:F0} KiB | {Figure(p.Perplexity, "F4")} | {Delta(p.Perplexity, teacher.Perplexity)} | {Figure(p.Packed512, "F4")} | {Delta(p.Packed512, teacher.Packed512)} | {Figure(p.ExactMatch * 100, "F0")} | {Figure(p.F1 * 100, "F1")} |"));
        }
        return text.ToString();
    }

    /// <summary>A figure of a report, or "–" where the report has none (e.g. exact match of an eval run with --max-answer-tokens 0).</summary>
    internal static string Figure(double value, string format) => double.IsNaN(value) ? "–" : value.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>The change of <paramref name="value"/> over <paramref name="reference"/> in percent, signed, e.g. "+4.8%"; "–" where either is missing.</summary>
    internal static string Delta(double value, double reference, int decimals = 1)
    {
        if (double.IsNaN(value) || double.IsNaN(reference))
        {
            return "–";
        }
        var digits = "0." + new string('0', decimals);
        return ((value / reference - 1) * 100).ToString($"+{digits};-{digits};{digits}", CultureInfo.InvariantCulture) + "%";
    }

    /// <summary>Perplexity ratio and exact match against the KV share kept, one series per kind.</summary>
    public static void Plot(string path, TradeOffPoint teacher, IReadOnlyList<TradeOffPoint> points)
    {
        var series = new List<(string, double[], double[])>();
        foreach (var group in points.GroupBy(p => p.Kind))
        {
            var ordered = group.OrderBy(p => p.KvKept).ToArray();
            series.Add(($"{group.Key}: packed512 perplexity / teacher", ordered.Select(p => p.KvKept).ToArray(), ordered.Select(p => p.Packed512 / teacher.Packed512).ToArray()));
            series.Add(($"{group.Key}: EM / teacher", ordered.Select(p => p.KvKept).ToArray(), ordered.Select(p => teacher.ExactMatch > 0 ? p.ExactMatch / teacher.ExactMatch : 0).ToArray()));
        }
        Charts.Lines(path, series, "Cache kept vs quality (teacher = 1)", "share of the KV cache kept", "ratio to the teacher", pointsOnly: true);
    }
}
