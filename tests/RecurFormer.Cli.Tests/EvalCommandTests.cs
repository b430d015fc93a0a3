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
}
