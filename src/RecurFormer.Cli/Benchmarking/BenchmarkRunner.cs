using System.Diagnostics;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>
/// Runs the benchmark grid against one or more targets (a model and its baseline): for each prompt length and
/// concurrency, that many requests at once, each generating exactly max-tokens tokens, every target in turn before the
/// next cell, so that whatever the machine does meanwhile falls on both alike. Prompts are real text from the demo
/// model's domain, tokenized and cut to length, different per request so nothing is shared.
/// </summary>
public static class BenchmarkRunner
{
    /// <summary>A target and the prompts made for it (its own tokenizer): prompt(length, request) → ids.</summary>
    public sealed record Subject(IBenchTarget Target, Func<int, int, int[]> Prompt);

    /// <returns>The rows, target by target in the order given, each target's in grid order.</returns>
    public static async Task<List<BenchmarkRun>> Run(IReadOnlyList<Subject> subjects, IReadOnlyList<int> concurrencies, IReadOnlyList<int> promptLengths, int maxTokens, TextWriter progress)
    {
        // Warm-up: every cell of the grid once per target (a few tokens each, prompts of their own), then a pause. With a
        // single short warm-up request the first model of a run paid, inside its measured rows, for what the second then
        // found ready: the runtime recompiling hot code (tiered JIT, on a thread that took one of two cores from the
        // kernel threads) and oneDNN creating a kernel for each new matrix shape — 3x the inter-token latency at 1,024
        // tokens (4.5 ms against 1.5 ms for the same model second), whichever model ran first.
        foreach (var subject in subjects)
        {
            var warmup = 1_000_000;
            foreach (var length in promptLengths)
            {
                foreach (var concurrency in concurrencies)
                {
                    progress.Write($"\r{subject.Target.Name}: warm-up, concurrency {concurrency}, prompt {length} tokens ...          ");
                    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => subject.Target.Run(subject.Prompt(length, warmup++), 8, CancellationToken.None)));
                }
            }
        }
        await Task.Delay(TimeSpan.FromSeconds(1));

        var rows = subjects.ToDictionary(s => s, _ => new List<BenchmarkRun>());
        var cell = 0;
        foreach (var length in promptLengths)
        {
            foreach (var concurrency in concurrencies)
            {
                // Every request of the grid gets its own text: no prompt starts like an earlier one, so the prefix cache never hits here.
                var first = cell++ * 1000 + 1;
                foreach (var subject in subjects)
                {
                    progress.Write($"\r{subject.Target.Name}: concurrency {concurrency}, prompt {length} tokens ...          ");
                    rows[subject].Add(await Measure(subject, concurrency, length, maxTokens, first));
                }
            }
        }
        progress.WriteLine();
        return subjects.SelectMany(s => rows[s]).ToList();
    }

    private static async Task<BenchmarkRun> Measure(Subject subject, int concurrency, int length, int maxTokens, int first)
    {
        var cpu = new CpuShare();
        var start = Stopwatch.GetTimestamp();
        var measurements = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(i => subject.Target.Run(subject.Prompt(length, first + i), maxTokens, CancellationToken.None)));
        var duration = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var (processShare, machineShare) = cpu.Measure();
        var generated = measurements.Sum(m => (long)m.TokenTimes.Count);
        var ttft = measurements.Select(m => m.TimeToFirstToken).OfType<double>().ToArray();
        var itl = measurements.SelectMany(m => m.InterTokenLatencies).ToArray();
        return new BenchmarkRun(subject.Target.Name, concurrency, length, maxTokens, concurrency, generated, duration, generated / duration,
            Percentile(ttft, 0.5), Percentile(ttft, 0.95), Percentile(itl, 0.5), Percentile(itl, 0.95), processShare, machineShare);
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
