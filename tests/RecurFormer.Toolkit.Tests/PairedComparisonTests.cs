using System.Text.Json.Nodes;
using RecurFormer.Toolkit.Evaluation;

namespace RecurFormer.Toolkit.Tests;

/// <summary>
/// Two models' lines compared line by line (<see cref="PairedComparison"/>): the sign test against exact binomial
/// sums, the bootstrap interval, and the per-subset differences of scores built by hand.
/// </summary>
public sealed class PairedComparisonTests
{
    [Theory]
    // Exact two-sided binomial tails, from Python's math.comb over fractions.
    [InlineData(6, 3, 0.5078125)]
    [InlineData(3, 6, 0.5078125)]
    [InlineData(11, 12, 1.0)]
    [InlineData(0, 10, 0.001953125)]
    [InlineData(405, 317, 0.0011895781937556944)]
    [InlineData(194, 167, 0.17109427290901444)]
    [InlineData(700, 300, 1.7665678007950136e-37)]
    [InlineData(0, 0, 1.0)]
    public void The_sign_test_is_the_exact_two_sided_binomial_tail(int a, int b, double expected)
    {
        var p = PairedComparison.SignTest(a, b);
        Assert.Equal(expected, p, expected * 1e-9 + 1e-300);
    }

    [Fact]
    public void The_bootstrap_interval_holds_the_mean_and_repeats_itself()
    {
        var random = new Random(7);
        var values = Enumerable.Range(0, 300).Select(_ => -0.01 + 0.02 * random.NextDouble() - 0.004).ToArray();   // mean ≈ −0.004, spread ±0.01
        var (low, high) = PairedComparison.Interval(values);
        var mean = values.Average();
        Assert.InRange(mean, low!.Value, high!.Value);
        Assert.True(high < 0, $"a mean 4 standard errors below 0 has its interval below 0 too: [{low}, {high}]");
        // The standard error of the mean of a uniform spread of width 0.02 over 300 values: 0.02 / √12 / √300 ≈ 0.00033;
        // the 95% interval is about ±1.96 of it.
        Assert.InRange(high!.Value - low.Value, 2 * 1.96 * 0.00033 * 0.8, 2 * 1.96 * 0.00033 * 1.2);
        Assert.Equal((low, high), PairedComparison.Interval(values));
        Assert.Equal((null, null), PairedComparison.Interval([]));
    }

    [Fact]
    public void Lines_are_compared_per_subset_by_their_mean_nll_per_token()
    {
        // Two doc lines and three qa lines; the model is better on the first doc line and on two qa lines' answers.
        LineScore[] baseline =
        [
            new(1, "doc", 10, 10.0, 0, 0),
            new(2, "doc", 20, 10.0, 0, 0),
            new(3, "qa", 10, 5.0, 4, 2.0),
            new(4, "qa", 10, 5.0, 4, 2.0),
            new(5, "qa", 10, 5.0, 0, 0),   // no answer boundary found: left out of qa_answer
        ];
        LineScore[] model =
        [
            baseline[0] with { Nll = 9.0 },                   // −0.1 per token
            baseline[1] with { Nll = 11.0 },                  // +0.05
            baseline[2] with { Nll = 4.6, AnswerNll = 1.6 },  // −0.04; answer −0.1
            baseline[3] with { Nll = 4.8, AnswerNll = 1.8 },  // −0.02; answer −0.05
            baseline[4],                                      // 0: neither better
        ];
        var paired = PairedComparison.Of(model, baseline, [], []);

        void Check(string subset, int lines, int lower, int higher, double mean)
        {
            var row = paired[subset]!.AsObject();
            Assert.Equal(lines, row["lines"]!.GetValue<int>());
            Assert.Equal(lower, row["model_lower"]!.GetValue<int>());
            Assert.Equal(higher, row["baseline_lower"]!.GetValue<int>());
            Assert.Equal(mean, row["mean_nll_difference"]!.GetValue<double>(), 6);
            Assert.InRange(mean, row["ci95_low"]!.GetValue<double>(), row["ci95_high"]!.GetValue<double>());
            Assert.Equal(PairedComparison.SignTest(lower, higher), row["sign_test_p"]!.GetValue<double>());
        }
        Check("all", 5, 3, 1, (-0.1 + 0.05 - 0.04 - 0.02 + 0) / 5);
        Check("doc", 2, 1, 1, (-0.1 + 0.05) / 2);
        Check("qa", 3, 2, 0, (-0.04 - 0.02 + 0) / 3);
        Check("qa_answer", 2, 2, 0, (-0.1 - 0.05) / 2);
        Assert.Null(paired["exact_match"]);   // question answering off

        // With answers: the questions only one of the two answered exactly.
        GeneratedAnswer Answer(int line, bool exact) => new(line, [1], [2], exact);
        var withAnswers = PairedComparison.Of(model, baseline,
            [Answer(3, true), Answer(4, true), Answer(5, false)], [Answer(3, false), Answer(4, true), Answer(5, true)]);
        var exact = withAnswers["exact_match"]!.AsObject();
        Assert.Equal(3, exact["questions"]!.GetValue<int>());
        Assert.Equal(1, exact["only_model_exact"]!.GetValue<int>());
        Assert.Equal(1, exact["only_baseline_exact"]!.GetValue<int>());
        Assert.Equal(1.0, exact["sign_test_p"]!.GetValue<double>());

        // Lines or answers that do not pair up are refused.
        Assert.Throws<ArgumentException>(() => PairedComparison.Of(model, baseline.Reverse().ToArray(), [], []));
        Assert.Throws<ArgumentException>(() => PairedComparison.Of(model, baseline[..4], [], []));
        Assert.Throws<ArgumentException>(() => PairedComparison.Of(model, baseline, [Answer(3, true)], [Answer(4, true)]));

        var printed = new StringWriter();
        PairedComparison.Print(printed, withAnswers);
        Assert.Contains("qa_answer", printed.ToString());
        Assert.Contains("only the model exact on 1, only the baseline on 1, sign test p = 1", printed.ToString());
    }
}
