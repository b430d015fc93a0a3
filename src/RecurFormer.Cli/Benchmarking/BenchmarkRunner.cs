using System.Diagnostics;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>
/// Runs the benchmark grid against a target: for each prompt length and concurrency, that many requests at once
/// (after a warm-up), each generating exactly max-tokens tokens. Prompts are real text from the demo
/// model's domain, tokenized and cut to length, different per request so nothing is shared.
/// </summary>
public static class BenchmarkRunner
{
    public static async Task<List<BenchmarkRun>> Run(IBenchTarget target, Func<int, int, int[]> prompt, IReadOnlyList<int> concurrencies, IReadOnlyList<int> promptLengths, int maxTokens, TextWriter progress)
    {
        // Warm-up: every cell of the grid once (a few tokens each, prompts of their own), then a pause. With a single short
        // warm-up request the first model of a run paid, inside its measured rows, for what the second then found ready:
        // the runtime recompiling hot code (tiered JIT, on a thread that took one of two cores from the kernel threads)
        // and oneDNN creating a kernel for each new matrix shape. Measured: the first model of a run at 3x its
        // inter-token latency at 1,024 tokens (4.5 ms against 1.5 ms for the same model second), whichever model it was.
        var warmup = 1_000_000;
        foreach (var length in promptLengths)
        {
            foreach (var concurrency in concurrencies)
            {
                await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => target.Run(prompt(length, warmup++), 8, CancellationToken.None)));
            }
        }
        await Task.Delay(TimeSpan.FromSeconds(1));
        var runs = new List<BenchmarkRun>();
        foreach (var length in promptLengths)
        {
            foreach (var concurrency in concurrencies)
            {
                progress.Write($"\r{target.Name}: concurrency {concurrency}, prompt {length} tokens ...          ");
                var cpu = new CpuShare();
                var start = Stopwatch.GetTimestamp();
                // Every request of the grid gets its own text: no prompt starts like an earlier one, so the prefix cache never hits here.
                var first = runs.Count * 1000 + 1;
                var measurements = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(i => target.Run(prompt(length, first + i), maxTokens, CancellationToken.None)));
                var duration = Stopwatch.GetElapsedTime(start).TotalSeconds;
                var (processShare, machineShare) = cpu.Measure();
                var generated = measurements.Sum(m => (long)m.TokenTimes.Count);
                var ttft = measurements.Select(m => m.TimeToFirstToken).OfType<double>().ToArray();
                var itl = measurements.SelectMany(m => m.InterTokenLatencies).ToArray();
                runs.Add(new BenchmarkRun(target.Name, concurrency, length, maxTokens, concurrency, generated, duration, generated / duration,
                    Percentile(ttft, 0.5), Percentile(ttft, 0.95), Percentile(itl, 0.5), Percentile(itl, 0.95), processShare, machineShare));
            }
        }
        progress.WriteLine();
        return runs;
    }

    public static double Percentile(double[] values, double quantile)
    {
        if (values.Length == 0)
        {
            return double.NaN;
        }
        var sorted = values.Order().ToArray();
        var rank = quantile * (sorted.Length - 1);
        var low = (int)Math.Floor(rank);
        var high = (int)Math.Ceiling(rank);
        return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
    }
}
