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
        // /metrics is read while the reply streams, not after some tokens of it: the engine does not wait for its client,
        // so on a loaded machine it could finish the whole reply before the client had read 200 tokens of it (this test
        // failed so once in a full CI run). The snapshot checked below is the first one that shows a live sequence of 200
        // tokens or more (by the bytes its full KV would take), well past the ~32 tokens (with a 16-bit KV cache) where
        // the fixed rings and Mamba state start to cost less than the KV they replace.
        var layout = server.Engine.Layout;
        var longEnough = layout.SequenceBytesWithoutReplacement(200);
        using var replyDone = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!replyDone.IsCancellationRequested)
            {
                var snapshot = await server.Anonymous.GetStringAsync("metrics");
                if (Without(snapshot) >= longEnough)
                {
                    return snapshot;
                }
                await Task.Delay(20);
            }
            return null;
        });
        using (var reader = new StreamReader(await response.Content.ReadAsStreamAsync(hangUp.Token)))
        {
            while (!watcher.IsCompleted && await reader.ReadLineAsync(hangUp.Token) is { } line && line != "data: [DONE]")
            {
            }
        }
        replyDone.Cancel();
        var text = await watcher;
        hangUp.Cancel();
        Assert.True(text is not null, "no /metrics snapshot showed the live sequence past 200 tokens while the reply streamed");

        Assert.True(layout.MambaSlotBytes > 0);
        Assert.Equal(layout.MambaSlotBytes, MambaBytes(text));
        // A sequence of a few hundred tokens: its KV kept (50%) plus the fixed rings and Mamba state is less than the full KV would be.
        var (held, without) = (Held(text!), Without(text!));
        Assert.True(held < without, $"held {held} B, without replacement {without} B");
        Assert.Equal(1 - held / without, ConcurrencyTests.Sample(text, "recurformer_cache_saved_ratio{"), 6);
        var info = text.Split('\n').Single(l => l.StartsWith("recurformer_model_info{", StringComparison.Ordinal));
        Assert.Contains("replaced_kv_groups=\"16\"", info);
        Assert.Contains($"state_bytes_per_sequence=\"{layout.SlotBytes}\"", info);
    }

    private static double MambaBytes(string metrics) => ConcurrencyTests.Sample(metrics, "recurformer_cache_bytes{", "kind=\"mamba_state\"");

    /// <summary>Cache bytes held by live sequences, every kind.</summary>
    private static double Held(string metrics) =>
        new[] { "kv", "window_kv", "mamba_state" }.Sum(kind => ConcurrencyTests.Sample(metrics, "recurformer_cache_bytes{", $"kind=\"{kind}\""));

    private static double Without(string metrics) => ConcurrencyTests.Sample(metrics, "recurformer_cache_bytes_without_replacement{");
}
