using System.Net;
using System.Text;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>Many streams at once, some abandoned midway: the rest stay well formed and the engine ends up empty.</summary>
[Collection(ServerCollection.Name)]
public sealed class ConcurrencyTests(SharedServer shared) : IDisposable
{
    private readonly TestServer _server = shared.Server;

    /// <summary>
    /// A client that closes the connection when a response is abandoned: by default HttpClient drains the rest of the
    /// response to reuse the connection, and the server would never see the client go.
    /// </summary>
    private HttpClient Streaming { get; } = new(new SocketsHttpHandler { MaxResponseDrainSize = 0 })
    {
        BaseAddress = shared.Server.BaseAddress,
        DefaultRequestHeaders = { Authorization = new("Bearer", TestServer.ApiKey) },
    };

    public void Dispose() => Streaming.Dispose();

    private const int Streams = 64;
    private const int MaxTokens = 24;

    private static readonly string[] Questions =
    [
        "Explain System.String.Trim.", "Explain System.Threading.CancellationToken.Equals.", "Explain System.Int32.Parse.",
        "Explain System.Collections.Generic.List`1.Add.", "Explain System.IO.File.ReadAllText.", "Explain System.Guid.NewGuid.",
    ];

    [Fact]
    public async Task SixtyFourStreams_AThirdDisconnected_CompletedOnesWellFormed_ThenNothingLeftInTheEngine()
    {
        var baseline = await _server.WaitIdleAsync();
        var abortedBefore = Aborted(await _server.Anonymous.GetStringAsync("metrics"));
        var abandoned = (Streams + 2) / 3;
        var results = await Task.WhenAll(Enumerable.Range(0, Streams).Select(i => RunStream(i, disconnect: i % 3 == 0)));

        var completed = results.Where(r => r is not null).ToList();
        Assert.Equal(Streams - abandoned, completed.Count);
        foreach (var blocks in completed)
        {
            AssertWellFormed(blocks!);
        }

        var idle = await _server.WaitIdleAsync();
        Assert.Equal(0, idle.Running);
        Assert.Equal(0, idle.Waiting);
        Assert.Equal(0, idle.Cache.TotalBytes);
        Assert.Equal(0, idle.Cache.BlocksInUse);
        Assert.Equal(0, idle.Cache.Sequences);
        Assert.Equal(baseline.LiveTensors, idle.LiveTensors);

        // Request metrics are recorded as each HTTP request winds down, just after the engine lets go of it.
        var metrics = await _server.Anonymous.GetStringAsync("metrics");
        for (var deadline = DateTime.UtcNow.AddMinutes(1); Aborted(metrics) < abandoned + abortedBefore && DateTime.UtcNow < deadline; await Task.Delay(50))
        {
            metrics = await _server.Anonymous.GetStringAsync("metrics");
        }
        Assert.True(Aborted(metrics) >= abandoned + abortedBefore, $"{Aborted(metrics) - abortedBefore} of {abandoned} abandoned streams counted as aborted");
        Assert.Equal(0, Sample(metrics, "recurformer_requests_running{"));
        Assert.Equal(0, Sample(metrics, "recurformer_requests_waiting{"));
        foreach (var kind in new[] { "kv", "window_kv", "mamba_state" })
        {
            Assert.Equal(0, Sample(metrics, "recurformer_cache_bytes{", $"kind=\"{kind}\""));
        }
    }

    private static double Aborted(string metrics) =>
        metrics.Split('\n').Any(l => l.StartsWith("recurformer_request_success_total{", StringComparison.Ordinal) && l.Contains("finished_reason=\"abort\""))
            ? Sample(metrics, "recurformer_request_success_total{", "finished_reason=\"abort\"")
            : 0;

    /// <summary>The SSE blocks of a finished stream, or null when this stream was abandoned on purpose.</summary>
    private async Task<List<string>?> RunStream(int index, bool disconnect)
    {
        var body = new
        {
            messages = new object[] { new { role = "user", content = Questions[index % Questions.Length] } },
            temperature = 0.7,
            seed = index,
            max_tokens = MaxTokens,
            ignore_eos = true,
            stream = true,
            stream_options = new { include_usage = true },
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = TestServer.Json(body) };
        using var response = await Streaming.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var deltas = 0;
        var blocks = await SseBlocks.Read(reader, block => disconnect && SseBlocks.IsContentDelta(block) && ++deltas == 2);
        // Disconnecting: disposing the response closes the connection (the client never drains, see Streaming).
        return disconnect && deltas == 2 ? null : blocks;
    }

    private static void AssertWellFormed(List<string> blocks)
    {
        // A stream that waited in the queue may carry keep-alive comments; they are valid SSE and carry nothing.
        Assert.All(blocks.Where(b => b.StartsWith(':')), b => Assert.Equal(": keep-alive", b));
        blocks = blocks.Where(b => !b.StartsWith(':')).ToList();
        Assert.Equal("data: [DONE]", blocks[^1]);
        var chunks = blocks[..^1].Select(b =>
        {
            Assert.StartsWith("data: ", b);
            return JsonDocument.Parse(b["data: ".Length..]).RootElement;
        }).ToList();
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        Assert.Single(chunks.Select(c => c.GetProperty("created").GetInt64()).Distinct());
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.Equal("length", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(MaxTokens, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        foreach (var delta in chunks[1..^2])
        {
            var choice = delta.GetProperty("choices")[0];
            Assert.Equal(JsonValueKind.Null, choice.GetProperty("finish_reason").ValueKind);
            Assert.Equal(JsonValueKind.String, choice.GetProperty("delta").GetProperty("content").ValueKind);
        }
    }

    /// <summary>The value of the first sample line that starts with <paramref name="prefix"/> and contains <paramref name="label"/>.</summary>
    internal static double Sample(string metrics, string prefix, string label = "")
    {
        var line = metrics.Split('\n').FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal) && l.Contains(label, StringComparison.Ordinal))
            ?? throw new Xunit.Sdk.XunitException($"no sample {prefix}…{label} in /metrics");
        return double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }
}
