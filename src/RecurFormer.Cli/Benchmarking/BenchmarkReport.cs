using System.Text.Json;
using System.Text.Json.Serialization;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>One (model, concurrency, prompt length) run.</summary>
public sealed record BenchmarkRun(
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("concurrency")] int Concurrency,
    [property: JsonPropertyName("prompt_tokens")] int PromptTokens,
    [property: JsonPropertyName("max_tokens")] int MaxTokens,
    [property: JsonPropertyName("requests")] int Requests,
    [property: JsonPropertyName("generated_tokens")] long GeneratedTokens,
    [property: JsonPropertyName("duration_s")] double DurationSeconds,
    [property: JsonPropertyName("decode_tokens_per_s")] double DecodeTokensPerSecond,
    [property: JsonPropertyName("ttft_p50_s")] double TtftP50,
    [property: JsonPropertyName("ttft_p95_s")] double TtftP95,
    [property: JsonPropertyName("itl_p50_s")] double ItlP50,
    [property: JsonPropertyName("itl_p95_s")] double ItlP95,
    [property: JsonPropertyName("cpu_share_process")] double CpuShareProcess,
    [property: JsonPropertyName("cpu_share_machine")] double CpuShareMachine);

/// <summary>How many sequences of a given length fit a given cache budget, for the model and its baseline.</summary>
public sealed record CapacityResult(
    [property: JsonPropertyName("budget_bytes")] long BudgetBytes,
    [property: JsonPropertyName("sequence_tokens")] int SequenceTokens,
    [property: JsonPropertyName("model_sequences")] long ModelSequences,
    [property: JsonPropertyName("baseline_sequences")] long? BaselineSequences,
    [property: JsonPropertyName("model_bytes_per_sequence")] long ModelBytesPerSequence,
    [property: JsonPropertyName("baseline_bytes_per_sequence")] long? BaselineBytesPerSequence);

public sealed record BenchmarkReport(
    [property: JsonPropertyName("mode")] string Mode,
    [property: JsonPropertyName("device")] string Device,
    [property: JsonPropertyName("runs")] IReadOnlyList<BenchmarkRun> Runs,
    [property: JsonPropertyName("capacity")] CapacityResult? Capacity)
{
    [JsonPropertyName("soak")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SoakResult? Soak { get; init; }

    public void WriteJson(string path) => WriteJson(path, this);

    /// <summary>Writes any benchmark report as indented JSON, creating its folder.</summary>
    public static void WriteJson(string path, object report)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        File.WriteAllText(path, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
    }

    public void PrintTable(TextWriter output)
    {
        output.WriteLine($"{"model",-28} {"conc",5} {"prompt",7} {"tok/s",9} {"ttft p50",9} {"ttft p95",9} {"itl p50",9} {"itl p95",9} {"cpu",5}");
        foreach (var run in Runs)
        {
            output.WriteLine($"{Short(run.Model),-28} {run.Concurrency,5} {run.PromptTokens,7} {run.DecodeTokensPerSecond,9:F1} {Ms(run.TtftP50),9} {Ms(run.TtftP95),9} {Ms(run.ItlP50),9} {Ms(run.ItlP95),9} {run.CpuShareProcess,5:P0}");
        }
        if (Capacity is { } c)
        {
            output.WriteLine();
            output.WriteLine($"capacity in {c.BudgetBytes / (1 << 20)} MiB of cache, sequences of {c.SequenceTokens} tokens: model {c.ModelSequences} ({c.ModelBytesPerSequence:N0} B each)" +
                (c.BaselineSequences is { } b ? $", baseline {b} ({c.BaselineBytesPerSequence:N0} B each)" : ""));
        }
        if (Soak is { } soak)
        {
            output.WriteLine();
            output.WriteLine($"resident memory over {soak.Requests} requests after {soak.WarmupRequests} of warm-up: " +
                string.Join(", ", soak.Samples.Select(s => $"{s.Requests}: {s.RssBytes / (1 << 20)} MiB ({s.LiveTensors} tensors)")) +
                $"; growth {soak.RssGrowthBytes / 1024.0 / 1024.0:F1} MiB");
        }
    }

    /// <summary>A checkpoint's folder name for the tables.</summary>
    public static string Short(string path) => Path.GetFileName(path.TrimEnd('/')) is { Length: > 0 } name ? name : path;
    private static string Ms(double seconds) => double.IsNaN(seconds) ? "-" : $"{seconds * 1000:F1}ms";
}
