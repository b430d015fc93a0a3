using System.Diagnostics;
using System.Text.Json.Serialization;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>One model, caching on or off: time to first token by turn, and throughput over the whole scenario.</summary>
public sealed record ConversationRun(
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("prefix_caching")] bool PrefixCaching,
    [property: JsonPropertyName("conversations")] int Conversations,
    [property: JsonPropertyName("turns")] int Turns,
    [property: JsonPropertyName("ttft_p50_s_by_turn")] IReadOnlyList<double> TtftP50ByTurn,
    [property: JsonPropertyName("last_turn_prompt_tokens")] int LastTurnPromptTokens,
    [property: JsonPropertyName("generated_tokens")] long GeneratedTokens,
    [property: JsonPropertyName("duration_s")] double DurationSeconds,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("prefix_cache_hit_tokens")] long HitTokens,
    [property: JsonPropertyName("prefix_cache_queried_tokens")] long QueriedTokens,
    [property: JsonPropertyName("cpu_share_process")] double CpuShareProcess);

/// <summary>
/// Issue 13's scenario: many conversations at once, each a series of turns where the client re-sends the whole
/// history (as every chat client does): a system prompt shared by all conversations, then per turn a new user message
/// and the model's previous answers. Conversations run concurrently, turns within one in order.
/// </summary>
public static class ConversationBench
{
    public sealed record Shape(int Conversations = 16, int Turns = 8, int SystemTokens = 300, int UserTokens = 60, int AnswerTokens = 64)
    {
        /// <summary>The longest prompt: the last turn's.</summary>
        public int LastPromptTokens => SystemTokens + Turns * UserTokens + (Turns - 1) * AnswerTokens;
    }

    public static async Task<ConversationRun> Run(IBenchTarget target, bool caching, Func<int, int, int[]> prompt, Shape shape,
        Func<(long Hits, long Queries)> prefixCounters, TextWriter progress)
    {
        var system = prompt(shape.SystemTokens, 900_000);
        var ttft = Enumerable.Range(0, shape.Turns).Select(_ => new List<double>()).ToArray();
        var before = prefixCounters();
        var cpu = new CpuShare();
        var start = Stopwatch.GetTimestamp();
        var generated = 0L;
        progress.Write($"\r{target.Name}: {shape.Conversations} conversations x {shape.Turns} turns, prefix caching {(caching ? "on" : "off")} ...   ");
        await Task.WhenAll(Enumerable.Range(0, shape.Conversations).Select(async conversation =>
        {
            var history = new List<int>(system);
            for (var turn = 0; turn < shape.Turns; turn++)
            {
                history.AddRange(prompt(shape.UserTokens, 1_000_000 + conversation * 100 + turn));
                var measurement = await target.Run([.. history], shape.AnswerTokens, CancellationToken.None);
                lock (ttft)
                {
                    ttft[turn].Add(measurement.TimeToFirstToken ?? double.NaN);
                }
                Interlocked.Add(ref generated, measurement.TokenIds.Count);
                history.AddRange(measurement.TokenIds);
            }
        }));
        var duration = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var (share, _) = cpu.Measure();
        var after = prefixCounters();
        progress.WriteLine();
        return new ConversationRun(target.Name, caching, shape.Conversations, shape.Turns,
            ttft.Select(t => BenchmarkRunner.Percentile([.. t], 0.5)).ToArray(), shape.LastPromptTokens, generated, duration,
            generated / duration, after.Hits - before.Hits, after.Queries - before.Queries, share);
    }

    public static void PrintTable(IReadOnlyList<ConversationRun> runs, TextWriter output)
    {
        output.WriteLine($"{"model",-28} {"caching",8} {"ttft turn 1",12} {"ttft turn " + runs[0].Turns,12} {"tok/s",9} {"hit tokens",12} {"cpu",5}");
        foreach (var run in runs)
        {
            output.WriteLine($"{BenchmarkReport.Short(run.Model),-28} {(run.PrefixCaching ? "on" : "off"),8} {run.TtftP50ByTurn[0] * 1000,10:F1}ms {run.TtftP50ByTurn[^1] * 1000,10:F1}ms {run.TokensPerSecond,9:F1} {run.HitTokens,12:N0} {run.CpuShareProcess,5:P0}");
        }
        foreach (var model in runs.GroupBy(r => r.Model))
        {
            if (model.FirstOrDefault(r => r.PrefixCaching) is { } on && model.FirstOrDefault(r => !r.PrefixCaching) is { } off)
            {
                output.WriteLine($"{BenchmarkReport.Short(model.Key)}: last-turn TTFT with caching {on.TtftP50ByTurn[^1] / off.TtftP50ByTurn[^1]:F2}x without; throughput {on.TokensPerSecond / off.TokensPerSecond:F2}x");
            }
        }
    }
}
