using System.Text.Json.Nodes;
using RecurFormer.Toolkit.Evaluation;

namespace RecurFormer.Toolkit.Tests;

/// <summary><c>recurformer eval curve</c>'s parts: the point and level arguments, the table, the two charts.</summary>
public sealed class TrainingCurveTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("Mamba 50%@9.2M=a/eval.json", "Mamba 50%", 9_200_000, "a/eval.json")]
    [InlineData("run@512k=e.json", "run", 512_000, "e.json")]
    [InlineData("run@300=runs@2/x=y.json", "run", 300, "runs@2/x=y.json")]
    public void Points_name_a_series_the_tokens_and_the_report(string spec, string series, double tokens, string path)
    {
        var point = TrainingCurve.ParsePoint(spec);
        Assert.Equal(series, point.Series);
        Assert.Equal(tokens, point.Tokens, 6);
        Assert.Equal(path, point.Path);
    }

    [Theory]
    [InlineData("no-tokens=e.json")]
    [InlineData("run@=e.json")]
    [InlineData("run@many=e.json")]
    [InlineData("run@-3M=e.json")]
    [InlineData("run@3M=")]
    [InlineData("@3M=e.json")]
    [InlineData("run@NaN=e.json")]
    [InlineData("run@InfinityM=e.json")]
    public void A_malformed_point_says_what_a_point_looks_like(string spec)
    {
        var error = Assert.Throws<FormatException>(() => TrainingCurve.ParsePoint(spec));
        Assert.Contains(spec, error.Message);
    }

    [Fact]
    public void The_table_lists_each_series_in_token_order_then_the_levels_and_the_charts_are_written()
    {
        var teacher = Report("teacher", 1.40, 0.43);
        CurvePoint[] points =
        [
            new("Mamba", 9e6, Report("late", 1.47, 0.31)),
            new("Mamba", 3e6, Report("early", 1.54, 0.25)),
            new("Other", 1e6, Report("other", 1.61, 0.20)),
        ];
        CurveLevel[] levels = [new("window", Report("window", 1.4014, 0.43))];

        var table = TrainingCurve.Markdown(teacher, points, levels).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
        [
            "| teacher | – | 1.4000 | 0.00% | 43 | 70.0 |",
            "| Mamba | 3.00M | 1.5400 | +10.00% | 25 | 70.0 |",
            "| Mamba | 9.00M | 1.4700 | +5.00% | 31 | 70.0 |",
            "| Other | 1.00M | 1.6100 | +15.00% | 20 | 70.0 |",
            "| window | 0 | 1.4014 | +0.10% | 43 | 70.0 |",
        ], table[2..]);

        var folder = _temp.Sub("curve");
        Directory.CreateDirectory(folder);
        TrainingCurve.Plot(folder, teacher, points, levels);
        foreach (var chart in new[] { "curve-perplexity.png", "curve-exact-match.png" })
        {
            var bytes = File.ReadAllBytes(Path.Combine(folder, chart));
            Assert.True(bytes.Length > 1000 && bytes[1] == 'P' && bytes[2] == 'N' && bytes[3] == 'G', $"{chart} is a PNG");
        }
    }

    [Fact]
    public void A_report_without_question_answering_shows_a_dash_for_its_exact_match_in_both_tables()
    {
        var teacher = Report("teacher", 1.40, 0.43);
        var perplexityOnly = Report("ppl-only", 1.47, null);   // eval --max-answer-tokens 0 writes null
        Assert.True(double.IsNaN(perplexityOnly.ExactMatch));

        var curveRow = TrainingCurve.Markdown(teacher, [new("Mamba", 1e6, perplexityOnly)], []).Split('\n', StringSplitOptions.RemoveEmptyEntries)[3];
        Assert.Equal("| Mamba | 1.00M | 1.4700 | +5.00% | – | 70.0 |", curveRow);
        var tradeOffRow = TradeOffTable.Markdown(teacher, [perplexityOnly]).Split('\n', StringSplitOptions.RemoveEmptyEntries)[3];
        Assert.Equal("| ppl-only | mamba | 50 % | 1 KiB | 1.4700 | +5.0% | 1.4700 | +5.0% | – | 70.0 |", tradeOffRow);
    }

    /// <summary>A TradeOffPoint as <c>recurformer eval</c>'s JSON gives it (only the figures the curve reads).</summary>
    private TradeOffPoint Report(string name, double perplexity, double? exactMatch)
    {
        var path = Path.Combine(_temp.Path, $"{name}.json");
        File.WriteAllText(path, new JsonObject
        {
            ["model"] = name,
            ["result"] = new JsonObject
            {
                ["kind"] = "mamba",
                ["perplexity"] = new JsonObject { ["all"] = perplexity, ["packed512"] = perplexity },
                ["qa"] = new JsonObject { ["exact_match"] = exactMatch, ["token_f1"] = 0.7 },
                ["cache"] = new JsonObject { ["kv_fraction_kept"] = 0.5, ["state_bytes_per_sequence"] = 1024, ["window_bytes_per_sequence"] = 0 },
            },
        }.ToJsonString());
        return TradeOffTable.Read(path);
    }
}
