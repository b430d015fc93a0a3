using System.Globalization;
using System.Text;
using RecurFormer.Toolkit.Reporting;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>One evaluation of a model in training: the series (run) it belongs to and the tokens it had been trained on.</summary>
public sealed record CurvePoint(string Series, double Tokens, TradeOffPoint Eval);

/// <summary>A fixed reference drawn across a curve: e.g. the window of the same fixed memory, which needs no training.</summary>
public sealed record CurveLevel(string Name, TradeOffPoint Eval);

/// <summary>
/// Quality against training tokens (<c>recurformer eval curve</c>): perplexity and exact match of the checkpoints of
/// a conversion's training runs, from the JSON files <c>recurformer eval</c> wrote, next to fixed levels such as the
/// window of equal memory. The issue's question "can the Mamba replacement beat the window however long it trains"
/// is answered by where the curve flattens against that level.
/// </summary>
public static class TrainingCurve
{
    /// <summary>
    /// A point given as <c>series@tokens=eval.json</c>, tokens with an optional M (millions) or k suffix. The series
    /// name ends at the first @ and the token count at the first = after it: the path may hold either.
    /// </summary>
    public static (string Series, double Tokens, string Path) ParsePoint(string spec)
    {
        var at = spec.IndexOf('@');
        var equals = at < 0 ? -1 : spec.IndexOf('=', at);
        if (at <= 0 || equals < 0 || equals == spec.Length - 1)
        {
            throw new FormatException($"'{spec}': a point is SERIES@TOKENS=EVAL.json, e.g. \"Mamba 50%@9.2M=eval.json\"");
        }
        return (spec[..at], Tokens(spec[(at + 1)..equals], spec), spec[(equals + 1)..]);
    }

    /// <summary>A level given as <c>name=eval.json</c> (the name ends at the first =).</summary>
    public static (string Name, string Path) ParseLevel(string spec)
    {
        var equals = spec.IndexOf('=');
        if (equals <= 0 || equals == spec.Length - 1)
        {
            throw new FormatException($"'{spec}': a level is NAME=EVAL.json, e.g. \"window w76 (equal memory)=eval.json\"");
        }
        return (spec[..equals], spec[(equals + 1)..]);
    }

    private static double Tokens(string text, string spec)
    {
        var scale = text.EndsWith('M') || text.EndsWith('m') ? 1e6 : text.EndsWith('k') || text.EndsWith('K') ? 1e3 : 1;
        var number = scale == 1 ? text : text[..^1];
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value) || value < 0)
        {
            throw new FormatException($"'{spec}': '{text}' is not a number of tokens");
        }
        return value * scale;
    }

    /// <summary>Each series in token order, then the levels: tokens, perplexity and its change over the teacher, exact match.</summary>
    public static string Markdown(TradeOffPoint teacher, IReadOnlyList<CurvePoint> points, IReadOnlyList<CurveLevel> levels)
    {
        var text = new StringBuilder();
        text.AppendLine("| series | training tokens | ppl all | Δ | EM | F1 |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|");
        void Row(string name, string tokens, TradeOffPoint p) => text.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"| {name} | {tokens} | {TradeOffTable.Figure(p.Perplexity, "F4")} | {TradeOffTable.Delta(p.Perplexity, teacher.Perplexity, decimals: 2)} | {TradeOffTable.Figure(p.ExactMatch * 100, "F0")} | {TradeOffTable.Figure(p.F1 * 100, "F1")} |"));
        Row("teacher", "–", teacher);
        foreach (var series in points.GroupBy(p => p.Series))
        {
            foreach (var point in series.OrderBy(p => p.Tokens))
            {
                Row(series.Key, string.Create(CultureInfo.InvariantCulture, $"{point.Tokens / 1e6:F2}M"), point.Eval);
            }
        }
        foreach (var level in levels)
        {
            Row(level.Name, "0", level.Eval);
        }
        return text.ToString();
    }

    /// <summary>Two charts in <paramref name="folder"/>: curve-perplexity.png (change over the teacher, %) and curve-exact-match.png (%).</summary>
    public static void Plot(string folder, TradeOffPoint teacher, IReadOnlyList<CurvePoint> points, IReadOnlyList<CurveLevel> levels)
    {
        // Perplexity falls towards its levels and exact match rises towards them: the legend goes to the corner each leaves free.
        void Chart(string file, string title, string yLabel, ScottPlot.Alignment legend, Func<TradeOffPoint, double> value) => Charts.Curves(Path.Combine(folder, file),
            points.GroupBy(p => p.Series).Select(g => g.OrderBy(p => p.Tokens).ToArray())
                .Select(s => (s[0].Series, s.Select(p => p.Tokens / 1e6).ToArray(), s.Select(p => value(p.Eval)).ToArray())),
            levels.Select(l => (l.Name, value(l.Eval))).Append(("teacher", value(teacher))),
            title, "training tokens (millions, stage 1 + stage 2)", yLabel, legend);
        Chart("curve-perplexity.png", "Perplexity against training tokens", "perplexity over the teacher's (%)", ScottPlot.Alignment.UpperRight,
            p => (p.Perplexity / teacher.Perplexity - 1) * 100);
        Chart("curve-exact-match.png", "Exact match against training tokens", "QA exact match (%)", ScottPlot.Alignment.LowerRight, p => p.ExactMatch * 100);
    }
}
