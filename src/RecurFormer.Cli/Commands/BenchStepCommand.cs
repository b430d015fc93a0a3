using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using RecurFormer.Cli.Benchmarking;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer bench-step</c>: one decode step of the model, without the engine around it, at several batch
/// sizes, through the hand-written CPU kernels and through libtorch: where the kernel path stops paying (the
/// crossover that sets the model's kernel batch limit), and where the kernel step spends its time.
/// </summary>
public static class BenchStepCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Checkpoint to measure.", DefaultValueFactory = _ => GenerateCommand.DefaultModel };
        var batches = new Option<string>("--batch") { Description = "Comma-separated batch sizes (sequences decoding together).", DefaultValueFactory = _ => "1,2,4,8,16,32,64" };
        var context = new Option<int>("--context") { Description = "Tokens already in each sequence's cache.", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "Decode steps timed per batch size and path (after 4 warm-up steps).", DefaultValueFactory = _ => 32 };
        var json = new Option<string>("--json") { Description = "Where to write the JSON report.", Required = true };
        var compute = new ComputeOptions();
        var command = new Command("bench-step", "Time one decode step through the CPU kernels and through libtorch, per batch size, with a profile of the kernel step.")
        {
            model, batches, context, steps, json,
        };
        compute.AddTo(command);
        command.SetAction(parse =>
        {
            var target = compute.Initialize(parse);
            using var loaded = CausalLMLoader.FromPretrained(parse.GetValue(model)!, target);
            if (loaded is not TransformerCausalLM transformer)
            {
                throw new UserError("bench-step measures Transformer-family checkpoints (the kernel path is theirs)");
            }
            using var threads = new KernelThreads(get_num_threads());
            var sizes = BenchCommand.ParseList(parse.GetValue(batches)!, "--batch");
            var contextTokens = parse.GetValue(context);
            var stepCount = parse.GetValue(steps);
            var rows = new List<StepRow>();
            foreach (var batch in sizes)
            {
                Console.Error.Write($"\rbatch {batch} ...   ");
                var cpu = new CpuShare();
                var profile = new KernelProfile();
                var kernels = target.Device.type == DeviceType.CPU ? Time(transformer, batch, contextTokens, stepCount, threads, kernelLimit: int.MaxValue, profile) : double.NaN;
                var libtorch = Time(transformer, batch, contextTokens, stepCount, threads, kernelLimit: 0, null);
                var (share, _) = cpu.Measure();
                rows.Add(new StepRow(batch, kernels * 1e3, batch / kernels, libtorch * 1e3, batch / libtorch,
                    profile.MicrosecondsPerStep().ToDictionary(p => p.Key.ToString(), p => Math.Round(p.Value, 1)), share));
            }
            Console.Error.WriteLine();
            transformer.KernelBatchLimit = TransformerCausalLM.DefaultKernelBatchLimit;
            var report = new StepReport(target.ToString(), threads.Count, contextTokens, TransformerCausalLM.DefaultKernelBatchLimit, rows);
            report.Print(Console.Out);
            File.WriteAllText(parse.GetValue(json)!, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return command;
    }

    /// <summary>Median seconds of one decode step of <paramref name="batch"/> sequences of <paramref name="context"/> tokens.</summary>
    private static double Time(TransformerCausalLM model, int batch, int context, int steps, KernelThreads threads, int kernelLimit, KernelProfile? profile)
    {
        model.KernelBatchLimit = kernelLimit;
        using var caches = ((ICausalLM)model).CreateCache(context + steps + 8, batch);
        var prompts = Enumerable.Range(0, batch).Select(b => Enumerable.Range(0, context).Select(i => (long)(3 + (i * 131 + b * 17) % (model.Config.VocabSize - 3))).ToArray()).ToArray();
        using (var scope = NewDisposeScope())
        {
            model.Forward(new ForwardBatch(prompts, caches.Sequences) { Threads = threads });
        }
        var next = prompts.Select(p => new[] { p[0] }).ToArray();
        var times = new List<double>();
        for (var step = 0; step < steps + 4; step++)
        {
            var measured = step >= 4;
            var start = Stopwatch.GetTimestamp();
            using (var scope = NewDisposeScope())
            {
                model.Forward(new ForwardBatch(next, caches.Sequences) { Threads = threads, Profile = measured ? profile : null });
            }
            if (measured)
            {
                times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
        }
        return BenchmarkRunner.Percentile([.. times], 0.5);
    }

    private sealed record StepRow(
        [property: JsonPropertyName("batch")] int Batch,
        [property: JsonPropertyName("kernel_step_ms")] double KernelStepMs,
        [property: JsonPropertyName("kernel_tokens_per_s")] double KernelTokensPerSecond,
        [property: JsonPropertyName("libtorch_step_ms")] double LibtorchStepMs,
        [property: JsonPropertyName("libtorch_tokens_per_s")] double LibtorchTokensPerSecond,
        [property: JsonPropertyName("kernel_profile_us")] Dictionary<string, double> KernelProfile,
        [property: JsonPropertyName("cpu_share_process")] double CpuShare);

    private sealed record StepReport(
        [property: JsonPropertyName("device")] string Device,
        [property: JsonPropertyName("threads")] int Threads,
        [property: JsonPropertyName("context_tokens")] int Context,
        [property: JsonPropertyName("kernel_batch_limit")] int KernelBatchLimit,
        [property: JsonPropertyName("rows")] IReadOnlyList<StepRow> Rows)
    {
        public void Print(TextWriter output)
        {
            output.WriteLine($"{Device}, {Threads} threads, {Context} tokens of context; the model takes the kernel path up to batch {KernelBatchLimit}");
            output.WriteLine($"{"batch",6} {"kernel ms",10} {"tok/s",9} {"libtorch ms",12} {"tok/s",9} {"faster",9} {"cpu",5}");
            foreach (var row in Rows)
            {
                var faster = row.KernelStepMs <= row.LibtorchStepMs ? "kernels" : "libtorch";
                output.WriteLine($"{row.Batch,6} {row.KernelStepMs,10:F2} {row.KernelTokensPerSecond,9:F0} {row.LibtorchStepMs,12:F2} {row.LibtorchTokensPerSecond,9:F0} {faster,9} {row.CpuShare,5:P0}");
            }
            output.WriteLine();
            output.WriteLine("kernel step, µs per part (thread 0, barrier waits included):");
            var parts = Rows[0].KernelProfile.Keys.ToArray();
            output.WriteLine($"{"batch",6} " + string.Join(" ", parts.Select(p => $"{p,12}")));
            foreach (var row in Rows)
            {
                output.WriteLine($"{row.Batch,6} " + string.Join(" ", parts.Select(p => $"{row.KernelProfile[p],12:F0}")));
            }
        }
    }
}
