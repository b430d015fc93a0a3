using System.Text.Json.Nodes;
using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer bench-products` on the distill.json of a real (short) distill run of the demo teacher.</summary>
public sealed class BenchProductsCommandTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), $"recurformer-products-{Guid.NewGuid():N}");

    private static string Models(string name) => Path.Combine(RepositoryRoot, "models", name);

    [Fact]
    public async Task Times_the_products_of_both_stages_of_a_run_and_reports_them_against_its_tokens_per_second()
    {
        var student = Path.Combine(_folder, "student");
        var run = Path.Combine(_folder, "run");
        var convert = await Run("convert", "--model", Models("dotnet-docs-qwen2-16m"), "--analysis", Path.Combine(RepositoryRoot, "docs", "results", "analysis", "recency.json"),
            "--kv-reduction", "0.25", "--kind", "mamba", "--out", student);
        Assert.True(convert.ExitCode == 0, convert.Stderr);
        var data = Path.Combine(_folder, "train.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 200).Select(i => new JsonObject { ["text"] = $"System.Collections.Generic.List`1.Item{i}\nGets or sets the element at index {i}." }.ToJsonString()));
        var distill = await Run("distill", "--teacher", Models("dotnet-docs-qwen2-16m"), "--student", student, "--data", data, "--out", run,
            "--stage1-steps", "2", "--stage2-steps", "2", "--batch", "2", "--length", "32", "--stage2-length", "16", "--workers", "2", "--threads", "2");
        Assert.True(distill.ExitCode == 0, distill.Stderr);

        var json = Path.Combine(_folder, "products.json");
        var bench = await Run("bench-products", "--run", Path.Combine(run, "distill.json"), "--repetitions", "1", "--threads", "2", "--json", json);
        Assert.True(bench.ExitCode == 0, bench.Stderr);
        Assert.Contains("ceiling tok/s", bench.Stdout);

        var report = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(2, (int)report["workers"]!);
        var stages = report["stages"]!.AsArray();
        Assert.Equal([1, 2], stages.Select(s => (int)s!["stage"]!));
        foreach (var stage in stages)
        {
            // One share is one of the two sequences; the products' time makes the ceiling, the run's own figure the share.
            var tokens = (int)stage!["stage"]! == 1 ? 32 : 16;
            Assert.Equal(tokens, (long)stage["tokens_per_worker_share"]!);
            var ceiling = (double)stage["ceiling_tokens_per_s"]!;
            Assert.Equal(2.0 * tokens / ((double)stage["products_ms_per_step"]! / 1e3), ceiling, ceiling * 0.01);
            Assert.Equal((double)stage["measured_tokens_per_s"]! / ceiling, (double)stage["products_share_of_step"]!, 0.01);
            var parts = stage["parts"]!.AsArray();
            Assert.Equal((double)stage["gflop_per_share"]!, parts.Sum(p => (double)p!["gflop"]!), 0.01);
            Assert.Contains(parts, p => (string)p!["part"]! == "teacher");   // no teacher cache: stage 2 runs the teacher too
        }
        Assert.Contains(stages[1]!["parts"]!.AsArray(), p => (string)p!["part"]! == "student lm_head");

        var missing = await Run("bench-products", "--run", Path.Combine(_folder, "nothing.json"), "--json", json);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("not found (the distill.json in a distill --out folder)", missing.Stderr);
        Assert.DoesNotContain("   at ", missing.Stderr);
        var window = await Run("bench-products", "--run", Path.Combine(run, "distill.json"), "--student", Models("dotnet-docs-window-16m"), "--json", json);
        Assert.Equal(1, window.ExitCode);
        Assert.Contains("not a converted Transformer with Mamba mixers", window.Stderr);
    }

    public void Dispose()
    {
        if (Directory.Exists(_folder))
        {
            Directory.Delete(_folder, recursive: true);
        }
    }
}
