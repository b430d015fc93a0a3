using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>/metrics passes promtool, carries every recurformer_* series, and a real Prometheus scrapes it.</summary>
[Collection(ServerCollection.Name)]
public sealed class MetricsTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    /// <summary>CI installs Prometheus with apt (promtool and prometheus in /usr/bin).</summary>
    private static string Tool(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin"))
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path))
            {
                return path;
            }
        }
        throw new Xunit.Sdk.XunitException($"{name} not found on PATH or in /usr/bin: apt-get install -y prometheus");
    }

    private async Task GenerateSomething()
    {
        var response = await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, max_tokens = 8, stream = true });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await response.Content.ReadAsStringAsync();
    }

    [Fact]
    public async Task Metrics_HaveEveryRecurFormerSeries_AndPassPromtool()
    {
        await GenerateSomething();
        var text = await _server.Anonymous.GetStringAsync("metrics");

        string[] series =
        [
            "recurformer_requests_running", "recurformer_requests_waiting", "recurformer_prompt_tokens_total", "recurformer_generation_tokens_total",
            "recurformer_request_success_total", "recurformer_time_to_first_token_seconds_bucket", "recurformer_inter_token_latency_seconds_bucket",
            "recurformer_e2e_request_latency_seconds_bucket", "recurformer_request_queue_time_seconds_bucket", "recurformer_preemptions_total",
            "recurformer_cache_usage_ratio", "recurformer_cache_bytes", "recurformer_cache_bytes_without_replacement", "recurformer_cache_saved_ratio",
            "recurformer_cache_capacity_bytes", "recurformer_model_info", "http_server_request_duration_seconds_bucket",
            "recurformer_prefix_cache_queries_total", "recurformer_prefix_cache_hits_total", "recurformer_prefix_cache_bytes", "recurformer_prefix_cache_snapshots",
        ];
        var names = text.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(l => l[..l.IndexOfAny(['{', ' '])]).ToHashSet();
        Assert.All(series, name => Assert.Contains(name, names));
        Assert.Contains("# TYPE recurformer_time_to_first_token_seconds histogram", text);
        Assert.Contains("# TYPE recurformer_prompt_tokens_total counter", text);
        Assert.Contains("# TYPE recurformer_cache_bytes gauge", text);
        Assert.Contains(text.Split('\n'), l => l.StartsWith("recurformer_request_success_total{", StringComparison.Ordinal) && l.Contains("finished_reason=\"length\""));
        Assert.True(ConcurrencyTests.Sample(text, "recurformer_generation_tokens_total{") >= 8);
        Assert.True(ConcurrencyTests.Sample(text, "recurformer_prefix_cache_queries_total{") > 0);
        Assert.Equal(64L << 20, ConcurrencyTests.Sample(text, "recurformer_cache_capacity_bytes{"));
        var info = text.Split('\n').Single(l => l.StartsWith("recurformer_model_info{", StringComparison.Ordinal));
        foreach (var label in new[] { "model=\"dotnet-docs-qwen2-16m\"", "layers=\"8\"", "replaced_kv_groups=\"0\"", "kv_bytes_per_token=\"6144\"", "state_bytes_per_sequence=\"0\"" })
        {
            Assert.Contains(label, info);
        }
        foreach (var kind in new[] { "kv", "window_kv", "mamba_state" })
        {
            Assert.Contains(text.Split('\n'), l => l.StartsWith("recurformer_cache_bytes{", StringComparison.Ordinal) && l.Contains($"kind=\"{kind}\""));
        }

        var check = new ProcessStartInfo(Tool("promtool"), ["check", "metrics"]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var promtool = Process.Start(check)!;
        await promtool.StandardInput.WriteAsync(text);
        promtool.StandardInput.Close();
        var output = await promtool.StandardOutput.ReadToEndAsync() + await promtool.StandardError.ReadToEndAsync();
        await promtool.WaitForExitAsync();
        Assert.True(promtool.ExitCode == 0, $"promtool check metrics failed:\n{output}");
    }

    [Fact]
    public async Task RealPrometheus_ScrapesTheServer_AndAnswersQueriesForTheSavedRatioAndTtftHistogram()
    {
        await GenerateSomething();
        var port = FreePort();
        var work = Directory.CreateTempSubdirectory("recurformer-prometheus-");
        try
        {
            var config = Path.Combine(work.FullName, "prometheus.yml");
            await File.WriteAllTextAsync(config, $"""
                global:
                  scrape_interval: 5s
                  scrape_timeout: 5s
                  evaluation_interval: 5s
                scrape_configs:
                  - job_name: recurformer
                    metrics_path: /metrics
                    static_configs:
                      - targets: ["{_server.BaseAddress.Authority}"]
                """);
            var start = new ProcessStartInfo(Tool("prometheus"),
                [$"--config.file={config}", $"--storage.tsdb.path={Path.Combine(work.FullName, "data")}", $"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var prometheus = Process.Start(start)!;
            prometheus.OutputDataReceived += (_, _) => { };
            prometheus.ErrorDataReceived += (_, _) => { };
            prometheus.BeginOutputReadLine();
            prometheus.BeginErrorReadLine();
            try
            {
                using var api = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") };
                var saved = await QueryUntilPresent(api, "recurformer_cache_saved_ratio", prometheus);
                Assert.Equal("recurformer", saved[0].GetProperty("metric").GetProperty("job").GetString());
                var value = double.Parse(saved[0].GetProperty("value")[1].GetString()!, System.Globalization.CultureInfo.InvariantCulture);
                Assert.InRange(value, 0, 1);

                var buckets = await QueryUntilPresent(api, "recurformer_time_to_first_token_seconds_bucket", prometheus);
                Assert.Contains(buckets, b => b.GetProperty("metric").GetProperty("le").GetString() == "+Inf");
                var quantile = await QueryUntilPresent(api, "histogram_quantile(0.5, sum by (le) (recurformer_time_to_first_token_seconds_bucket))", prometheus);
                Assert.Single(quantile);
            }
            finally
            {
                prometheus.Kill(entireProcessTree: true);
                await prometheus.WaitForExitAsync();
            }
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>Queries Prometheus until the result is non-empty (it must start, then scrape at least once).</summary>
    private static async Task<List<JsonElement>> QueryUntilPresent(HttpClient api, string query, Process prometheus)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (DateTime.UtcNow < deadline)
        {
            Assert.False(prometheus.HasExited, "prometheus exited");
            try
            {
                var body = await api.GetStringAsync("api/v1/query?query=" + Uri.EscapeDataString(query));
                var data = JsonDocument.Parse(body).RootElement.GetProperty("data").GetProperty("result");
                if (data.GetArrayLength() > 0)
                {
                    return data.EnumerateArray().Select(e => e.Clone()).ToList();
                }
            }
            catch (HttpRequestException)
            {
                // not listening yet
            }
            await Task.Delay(200);
        }
        // Say why: the target's scrape state and last error.
        var targets = await api.GetStringAsync("api/v1/targets");
        throw new Xunit.Sdk.XunitException($"Prometheus returned nothing for {query}; targets: {targets}");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
