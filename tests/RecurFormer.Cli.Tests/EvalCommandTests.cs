using System.Text.Json.Nodes;
using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer eval` end to end, on the demo teacher.</summary>
public sealed class EvalCommandTests
{
    private static readonly string Teacher = Path.Combine(RepositoryRoot, "models", "dotnet-docs-qwen2-16m");

    /// <summary>validation.jsonl's first lines of each kind, in a file of their own.</summary>
    public static string Lines(string folder, int docs, int questions)
    {
        var lines = File.ReadAllLines(Path.Combine(RepositoryRoot, "tests", "RecurFormer.Tokenization.Tests", "Data", "validation.jsonl"));
        var path = Path.Combine(folder, "lines.jsonl");
        File.WriteAllLines(path, lines.Where(l => l.Contains("\"kind\": \"doc\"")).Take(docs).Concat(lines.Where(l => l.Contains("\"kind\": \"qa\"")).Take(questions)));
        return path;
    }

    [Fact]
    public async Task Perplexity_only_writes_its_report_with_null_where_nothing_was_measured()
    {
        var folder = Directory.CreateTempSubdirectory("recurformer-eval-").FullName;
        try
        {
            var json = Path.Combine(folder, "report.json");
            var result = await Run("eval", "--model", Teacher, "--data", Lines(folder, 2, 2), "--json", json, "--max-answer-tokens", "0");
            Assert.True(result.ExitCode == 0, result.Stderr);
            var report = JsonNode.Parse(File.ReadAllText(json))!["result"]!;
            Assert.True(report["perplexity"]!["qa"]!.GetValue<double>() > 1);
            Assert.Null(report["qa"]!["exact_match"]);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task A_baseline_adds_the_line_by_line_comparison()
    {
        var folder = Directory.CreateTempSubdirectory("recurformer-eval-").FullName;
        try
        {
            // The teacher against itself: every line scores the same, so no line favours either.
            var json = Path.Combine(folder, "report.json");
            var result = await Run("eval", "--model", Teacher, "--baseline", Teacher, "--data", Lines(folder, 2, 2), "--json", json, "--max-answer-tokens", "0");
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Contains("paired, line by line", result.Stdout);
            var output = JsonNode.Parse(File.ReadAllText(json))!;
            Assert.True(output["result"]!["perplexity"]!["qa_answer"]!.GetValue<double>() > 1);
            var all = output["paired"]!["all"]!;
            Assert.Equal(4, all["lines"]!.GetValue<int>());
            Assert.Equal(2, output["paired"]!["qa_answer"]!["lines"]!.GetValue<int>());
            Assert.Equal(0, all["model_lower"]!.GetValue<int>() + all["baseline_lower"]!.GetValue<int>());
            Assert.Equal(0.0, all["mean_nll_difference"]!.GetValue<double>());
            Assert.Equal(1.0, all["sign_test_p"]!.GetValue<double>());
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
