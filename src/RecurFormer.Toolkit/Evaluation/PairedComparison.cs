using System.Globalization;
using System.Text.Json.Nodes;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// Two models scored on the same lines, compared line by line: whether a difference between their figures is larger
/// than the lines' own spread. A perplexity over a few thousand tokens moves by a few tenths of a percent when a handful
/// of lines change, and exact match over 100 questions by a point per answer; pairing each line with itself takes the
/// lines' difficulty, which varies far more than two close models do, out of the comparison.
/// <list type="bullet">
/// <item>Per subset of lines (all, doc, qa, and the qa lines' answer tokens alone): each line's mean NLL per token, the
/// model's minus the baseline's (nats; negative: the model predicts the line better), averaged over the lines with
/// each line weighted equally; a 95% interval from a paired bootstrap over the lines (fixed seed, so a rerun prints
/// the same); how many lines each model predicts better; and a two-sided sign test of those counts.</item>
/// <item>Exact match: the questions only one of the two answers exactly, and the sign test of those counts.</item>
/// </list>
/// </summary>
public static class PairedComparison
{
    public const int Resamples = 10_000;

    /// <summary>Subsets of lines compared: every line, each kind, and the qa lines' answers.</summary>
    public static readonly string[] Subsets = ["all", "doc", "qa", "qa_answer"];

    /// <param name="model">The model's lines, as <see cref="Evaluator.Lines"/> gives them.</param>
    /// <param name="baseline">The baseline's, the same lines in the same order.</param>
    /// <param name="modelAnswers">The model's greedy answers (empty with question answering off).</param>
    /// <param name="baselineAnswers">The baseline's, to the same questions.</param>
    public static JsonObject Of(IReadOnlyList<LineScore> model, IReadOnlyList<LineScore> baseline,
        IReadOnlyList<GeneratedAnswer> modelAnswers, IReadOnlyList<GeneratedAnswer> baselineAnswers)
    {
        if (model.Count != baseline.Count || model.Zip(baseline).Any(p => p.First.Line != p.Second.Line || p.First.Kind != p.Second.Kind))
        {
            throw new ArgumentException("the two line lists must score the same lines in the same order");
        }
        AnswerAgreement.RequireSameQuestions(modelAnswers, baselineAnswers);
        var pairs = model.Zip(baseline).ToArray();
        static double LineDifference((LineScore Model, LineScore Baseline) p) => p.Model.Nll / p.Model.Tokens - p.Baseline.Nll / p.Baseline.Tokens;
        var result = new JsonObject();
        foreach (var subset in Subsets)
        {
            var differences = subset switch
            {
                "all" => pairs.Select(LineDifference),
                "qa_answer" => pairs.Where(p => p.First.AnswerTokens > 0 && p.Second.AnswerTokens > 0)
                    .Select(p => p.First.AnswerNll / p.First.AnswerTokens - p.Second.AnswerNll / p.Second.AnswerTokens),
                _ => pairs.Where(p => p.First.Kind == subset).Select(LineDifference),
            };
            result[subset] = Summary(differences.ToArray());
        }
        if (modelAnswers.Count > 0)
        {
            var answers = modelAnswers.Zip(baselineAnswers).ToArray();
            var (onlyModel, onlyBaseline) = (answers.Count(p => p.First.Exact && !p.Second.Exact), answers.Count(p => !p.First.Exact && p.Second.Exact));
            result["exact_match"] = new JsonObject
            {
                ["questions"] = answers.Length,
                ["only_model_exact"] = onlyModel,
                ["only_baseline_exact"] = onlyBaseline,
                ["sign_test_p"] = SignTest(onlyModel, onlyBaseline),
            };
        }
        return result;
    }

    /// <summary>The summary of one subset's per-line differences (model − baseline); null figures where there are no lines.</summary>
    private static JsonObject Summary(double[] differences)
    {
        var (lower, higher) = (differences.Count(d => d < 0), differences.Count(d => d > 0));
        var (low, high) = Interval(differences);
        return new JsonObject
        {
            ["lines"] = differences.Length,
            ["model_lower"] = lower,
            ["baseline_lower"] = higher,
            ["mean_nll_difference"] = differences.Length == 0 ? null : Math.Round(differences.Average(), 6),
            ["ci95_low"] = low is { } l ? Math.Round(l, 6) : null,
            ["ci95_high"] = high is { } h ? Math.Round(h, 6) : null,
            ["sign_test_p"] = SignTest(lower, higher),
        };
    }

    /// <summary>The 2.5th and 97.5th percentiles of the mean over <see cref="Resamples"/> resamples of the values with replacement.</summary>
    public static (double? Low, double? High) Interval(IReadOnlyList<double> values)
    {
        if (values.Count == 0)
        {
            return (null, null);
        }
        var random = new Random(0);
        var means = new double[Resamples];
        for (var r = 0; r < Resamples; r++)
        {
            var sum = 0.0;
            for (var i = 0; i < values.Count; i++)
            {
                sum += values[random.Next(values.Count)];
            }
            means[r] = sum / values.Count;
        }
        Array.Sort(means);
        return (means[(int)(0.025 * (Resamples - 1))], means[(int)Math.Ceiling(0.975 * (Resamples - 1))]);
    }

    /// <summary>
    /// Two-sided exact sign test: the chance that a fair coin splits <paramref name="a"/> + <paramref name="b"/>
    /// tosses at least as unevenly as a : b (ties left out before). 1 when there are no tosses.
    /// </summary>
    public static double SignTest(int a, int b)
    {
        var n = a + b;
        if (n == 0)
        {
            return 1;
        }
        // Σ_{k ≤ min(a, b)} C(n, k) / 2^n, in logarithms (2^-n underflows past n ≈ 1,000), doubled.
        var logTerm = -n * Math.Log(2);   // k = 0
        var tail = 0.0;
        for (var k = 0; k <= Math.Min(a, b); k++)
        {
            tail += Math.Exp(logTerm);
            logTerm += Math.Log(n - k) - Math.Log(k + 1);
        }
        return Math.Min(1, 2 * tail);
    }

    /// <summary>A table for the console, one row per subset and one for exact match.</summary>
    public static void Print(TextWriter writer, JsonObject paired)
    {
        writer.WriteLine("paired, line by line (model − baseline mean NLL per token, nats; each line weighted equally; negative: the model is better):");
        writer.WriteLine($"{"lines",-10} {"n",5} {"model better",13} {"baseline better",16} {"mean diff",11} {"95% interval",24} {"sign test p",12}");
        foreach (var subset in Subsets)
        {
            if (paired[subset] is not JsonObject row)
            {
                continue;
            }
            string Figure(string key) => row[key] is JsonValue v ? v.GetValue<double>().ToString("F4", CultureInfo.InvariantCulture) : "-";
            var interval = $"[{Figure("ci95_low")}, {Figure("ci95_high")}]";
            writer.WriteLine($"{subset,-10} {row["lines"],5} {row["model_lower"],13} {row["baseline_lower"],16} {Figure("mean_nll_difference"),11} {interval,24} {Probability(row["sign_test_p"]!.GetValue<double>()),12}");
        }
        if (paired["exact_match"] is JsonObject exact)
        {
            writer.WriteLine($"exact match: {exact["questions"]} questions, only the model exact on {exact["only_model_exact"]}, only the baseline on {exact["only_baseline_exact"]}, sign test p = {Probability(exact["sign_test_p"]!.GetValue<double>())}");
        }
    }

    /// <summary>Four decimals, or two significant digits below 0.0001 (a sign test over hundreds of lines goes far below).</summary>
    private static string Probability(double p) =>
        p.ToString(p < 1e-4 ? "0.0E+0" : "0.####", CultureInfo.InvariantCulture);
}
