using System.Net;

namespace RecurFormer.Server.Tests;

/// <summary>Serving the RecurFormer demo model: /metrics shows Mamba state held and cache memory saved.</summary>
public sealed class HybridModelMetricsTests
{
    [Fact]
    public async Task While_a_request_runs_the_metrics_show_mamba_state_and_the_memory_saved()
    {
        var folder = Path.Combine(TestServer.RepositoryRoot, "models", "dotnet-docs-recurformer-16m");
        await using var server = await TestServer.StartAsync(new Dictionary<string, string> { ["model"] = folder });
        using var hangUp = new CancellationTokenSource();
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = TestServer.Json(new { messages = TestServer.ReferenceMessages, temperature = 0, max_tokens = 1900, ignore_eos = true, stream = true }),
        };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, hangUp.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(hangUp.Token));
        // 200 tokens in: past the length (28 tokens with a 16-bit KV cache) where the fixed rings and Mamba state cost
        // less than the KV they replace.
        for (var deltas = 0; deltas < 200;)
        {
            if ((await reader.ReadLineAsync(hangUp.Token))!.StartsWith("data: {", StringComparison.Ordinal))
            {
                deltas++;
            }
        }
        string text;
        var attempts = 0;
        do
        {
            text = await server.Anonymous.GetStringAsync("metrics");
            await Task.Delay(50);
        }
        while (MambaBytes(text) <= 0 && ++attempts < 100);
        hangUp.Cancel();

        var layout = server.Engine.Layout;
        Assert.True(layout.MambaSlotBytes > 0);
        Assert.Equal(layout.MambaSlotBytes, MambaBytes(text));
        // A sequence of a few hundred tokens: its KV kept (50%) plus the fixed rings and Mamba state is less than the full KV would be.
        var held = new[] { "kv", "window_kv", "mamba_state" }.Sum(kind => ConcurrencyTests.Sample(text, "recurformer_cache_bytes{", $"kind=\"{kind}\""));
        var without = ConcurrencyTests.Sample(text, "recurformer_cache_bytes_without_replacement{");
        Assert.True(held < without, $"held {held} B, without replacement {without} B");
        Assert.Equal(1 - held / without, ConcurrencyTests.Sample(text, "recurformer_cache_saved_ratio{"), 6);
        var info = text.Split('\n').Single(l => l.StartsWith("recurformer_model_info{", StringComparison.Ordinal));
        Assert.Contains("replaced_kv_groups=\"16\"", info);
        Assert.Contains($"state_bytes_per_sequence=\"{layout.SlotBytes}\"", info);
    }

    private static double MambaBytes(string metrics) => ConcurrencyTests.Sample(metrics, "recurformer_cache_bytes{", "kind=\"mamba_state\"");
}
