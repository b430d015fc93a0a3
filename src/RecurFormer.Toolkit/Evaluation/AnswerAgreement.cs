using System.Globalization;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// Where a model's greedy answers part from a baseline's (a converted model and its teacher): how many answers are
/// identical, which exact matches were lost or gained, and, at the first token where two answers differ, how sure the
/// baseline was of its own choice: its probability of its token minus its probability of the model's (an answer that
/// ended counts as the most likely stop token). Perplexity barely sees a flip between two near-equal tokens, exact
/// match loses the whole answer to it: a small margin says the model is off by little, a large one that it is wrong.
/// Also whether the baseline's token there is one the prompt holds (copied, e.g. from the member's name).
/// The margin comes from one prefill of the shared prefix, the answers from batched decoding: at a near-tie the two
/// can round differently, and the margin is then slightly negative (its share is reported).
/// </summary>
public static class AnswerAgreement
{
    /// <param name="model">The model's answers, as <see cref="Evaluator.Answers"/> gives them.</param>
    /// <param name="baseline">The baseline's answers to the same questions.</param>
    /// <param name="baselineModel">The baseline itself: it is run once more on the shared prefix of every differing pair.</param>
    public static JsonObject Of(IReadOnlyList<GeneratedAnswer> model, IReadOnlyList<GeneratedAnswer> baseline, ICausalLM baselineModel,
        IReadOnlySet<long> stopIds, int batchSize)
    {
        RequireSameQuestions(model, baseline);
        var pairs = model.Zip(baseline, (m, b) => (Model: m, Baseline: b)).ToArray();
        var diverged = pairs.Where(p => !p.Model.Tokens.SequenceEqual(p.Baseline.Tokens)).ToArray();
        var divergences = Divergences(diverged, baselineModel, stopIds, batchSize);
        var lost = divergences.Where(d => d.Pair.Baseline.Exact && !d.Pair.Model.Exact).ToArray();
        var parted = divergences.Where(d => !d.BaselineStopped).ToArray();   // the baseline has a token there
        return new JsonObject
        {
            ["questions"] = pairs.Length,
            ["identical"] = pairs.Length - diverged.Length,
            ["both_exact"] = pairs.Count(p => p.Model.Exact && p.Baseline.Exact),
            ["lost"] = pairs.Count(p => p.Baseline.Exact && !p.Model.Exact),
            ["gained"] = pairs.Count(p => p.Model.Exact && !p.Baseline.Exact),
            ["diverged"] = diverged.Length,
            ["model_stopped_first"] = divergences.Count(d => d.ModelStopped),
            ["baseline_stopped_first"] = divergences.Count(d => d.BaselineStopped),
            ["divergence_token"] = Summary(divergences.Select(d => (double)d.Position), shares: false),   // 0: the answer's first token
            // Whether the baseline's token where the answers part also occurs in the prompt (a token the answer copies,
            // such as part of the member's name), against that share over the baseline's answer tokens at the same
            // positions (answers copy more at some positions than at others) and over all of them.
            ["baseline_token_in_prompt"] = Share(parted.Select(d => InPrompt(d.Pair.Baseline, d.Position))),
            ["answer_tokens_in_prompt_at_those_positions"] = parted.Length == 0 ? null
                : Math.Round(parted.Average(d => baseline.Where(b => b.Tokens.Length > d.Position).Average(b => InPrompt(b, d.Position) ? 1.0 : 0.0)), 4),
            ["answer_tokens_in_prompt"] = Share(baseline.SelectMany(b => b.Tokens.Select(t => b.Prompt.Contains(t)))),
            ["baseline_margin"] = Summary(divergences.Select(d => d.Margin)),
            ["lost_baseline_margin"] = Summary(lost.Select(d => d.Margin)),
        };
    }

    /// <summary>Refuses two answer lists that do not answer the same questions in the same order.</summary>
    internal static void RequireSameQuestions(IReadOnlyList<GeneratedAnswer> model, IReadOnlyList<GeneratedAnswer> baseline)
    {
        if (model.Count != baseline.Count || model.Zip(baseline).Any(p => p.First.Line != p.Second.Line))
        {
            throw new ArgumentException("the two answer lists must answer the same questions in the same order");
        }
    }

    /// <summary>The first token where two answers differ, and the baseline's margin there.</summary>
    private sealed record Divergence((GeneratedAnswer Model, GeneratedAnswer Baseline) Pair, int Position, bool ModelStopped, bool BaselineStopped, double Margin);

    private static List<Divergence> Divergences((GeneratedAnswer Model, GeneratedAnswer Baseline)[] pairs, ICausalLM baselineModel, IReadOnlySet<long> stopIds,
        int batchSize)
    {
        var result = new List<Divergence>();
        var vocabulary = baselineModel.Config.VocabSize;
        var stops = stopIds.Where(id => id >= 0 && id < vocabulary).ToArray();
        foreach (var chunk in pairs.Chunk(Math.Max(1, batchSize)))
        {
            var positions = chunk.Select(p => FirstDifference(p.Model.Tokens, p.Baseline.Tokens)).ToArray();
            // Both answers share the prompt and the tokens before the divergence: the baseline's next-token distribution there.
            var contexts = chunk.Select((p, i) => (long[])[.. p.Baseline.Prompt, .. p.Baseline.Tokens.AsSpan(0, positions[i])]).ToArray();
            float[][] probabilities;
            using (NewDisposeScope())
            using (var caches = baselineModel.CreateCache(contexts.Max(c => c.Length), contexts.Length))
            {
                var logits = baselineModel.Forward(new ForwardBatch(contexts, caches.Sequences));
                var all = nn.functional.softmax(logits.to_type(ScalarType.Float32), 1).cpu();
                probabilities = Enumerable.Range(0, chunk.Length).Select(i => all[i].data<float>().ToArray()).ToArray();
            }
            for (var i = 0; i < chunk.Length; i++)
            {
                var (model, baseline) = chunk[i];
                var p = probabilities[i];
                var stop = stops.Length == 0 ? 0 : stops.Max(id => (double)p[id]);
                double Chosen(long[] tokens) => positions[i] < tokens.Length ? p[tokens[positions[i]]] : stop;
                result.Add(new Divergence(chunk[i], positions[i], positions[i] == model.Tokens.Length, positions[i] == baseline.Tokens.Length,
                    Chosen(baseline.Tokens) - Chosen(model.Tokens)));
            }
        }
        return result;
    }

    private static bool InPrompt(GeneratedAnswer answer, int position) => answer.Prompt.Contains(answer.Tokens[position]);

    private static int FirstDifference(long[] a, long[] b)
    {
        var i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i])
        {
            i++;
        }
        return i;
    }

    /// <summary>Count and quartiles; for margins (<paramref name="shares"/>) also the shares below 0, 0.1 and 0.3.</summary>
    private static JsonObject Summary(IEnumerable<double> values, bool shares = true)
    {
        var sorted = values.Order().ToArray();
        double? Quantile(double q) => sorted.Length == 0 ? null : Math.Round(sorted[(int)Math.Round(q * (sorted.Length - 1))], 4);
        double? Share(double limit) => sorted.Length == 0 ? null : Math.Round(sorted.Count(v => v < limit) / (double)sorted.Length, 4);
        var summary = new JsonObject
        {
            ["count"] = sorted.Length,
            ["p25"] = Quantile(0.25),
            ["median"] = Quantile(0.5),
            ["p75"] = Quantile(0.75),
        };
        if (shares)
        {
            summary["below_0"] = Share(0);
            summary["below_0.1"] = Share(0.1);
            summary["below_0.3"] = Share(0.3);
        }
        return summary;
    }

    private static double? Share(IEnumerable<bool> values)
    {
        var all = values.ToArray();
        return all.Length == 0 ? null : Math.Round(all.Count(v => v) / (double)all.Length, 4);
    }

    /// <summary>One line for the console.</summary>
    public static string Describe(JsonObject agreement)
    {
        string Of(string key) => agreement[key]?.ToJsonString() ?? "-";
        string Margin(string key, string part) => agreement[key]?[part]?.ToJsonString() ?? "-";
        return string.Create(CultureInfo.InvariantCulture,
            $"answers identical to the baseline's: {Of("identical")} of {Of("questions")}; exact matches lost {Of("lost")}, gained {Of("gained")}; " +
            $"baseline's margin where the answers part: median {Margin("baseline_margin", "median")} (below 0.1: {Margin("baseline_margin", "below_0.1")}), " +
            $"on the lost ones median {Margin("lost_baseline_margin", "median")}");
    }
}
