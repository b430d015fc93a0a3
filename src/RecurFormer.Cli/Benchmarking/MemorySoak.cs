using System.Text.Json.Serialization;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>Resident memory (and live tensors) after so many requests of a soak.</summary>
public sealed record SoakSample(
    [property: JsonPropertyName("requests")] int Requests,
    [property: JsonPropertyName("rss_bytes")] long RssBytes,
    [property: JsonPropertyName("live_tensors")] long LiveTensors);

/// <summary>A soak: how resident memory moved over many requests after a warm-up.</summary>
public sealed record SoakResult(
    [property: JsonPropertyName("requests")] int Requests,
    [property: JsonPropertyName("warmup_requests")] int WarmupRequests,
    [property: JsonPropertyName("rss_growth_bytes")] long RssGrowthBytes,
    [property: JsonPropertyName("samples")] IReadOnlyList<SoakSample> Samples);

/// <summary>
/// Many requests in waves of 16 (prompts of 32–160 tokens, 16 new tokens each), sampling the process's resident
/// set size and the engine's live tensors every 100 requests; growth is counted from the end of the warm-up. Pooled
/// cache memory is allocated up front, so a steady server should show no growth beyond allocator noise.
/// </summary>
public static class MemorySoak
{
    private const int Wave = 16;
    public const int LongestPrompt = 160;
    public const int NewTokens = 16;
    private const int SampleEvery = 100;

    public static async Task<SoakResult> Run(IBenchTarget target, Func<int, int, int[]> prompt, int requests, int warmup, Func<long> liveTensors, TextWriter progress)
    {
        var samples = new List<SoakSample>();
        for (var done = 0; done < warmup + requests;)
        {
            var count = Math.Min(Wave, warmup + requests - done);
            var first = done;
            await Task.WhenAll(Enumerable.Range(first, count).Select(i => target.Run(prompt(32 + i % (LongestPrompt - 31), i), NewTokens, CancellationToken.None)));
            done += count;
            if (done >= warmup && (done - warmup) % SampleEvery < count)
            {
                samples.Add(new SoakSample(done - warmup, ResidentBytes(), liveTensors()));
                progress.Write($"\rsoak: {done - warmup}/{requests} requests, RSS {samples[^1].RssBytes / (1 << 20)} MiB   ");
            }
        }
        progress.WriteLine();
        return new SoakResult(requests, warmup, samples[^1].RssBytes - samples[0].RssBytes, samples);
    }

    /// <summary>VmRSS from /proc (what `ps` and Kubernetes see), after a full collection so managed garbage is not counted.</summary>
    private static long ResidentBytes()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return line is null ? Environment.WorkingSet : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }
}
