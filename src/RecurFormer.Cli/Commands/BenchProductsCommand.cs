using System.CommandLine;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using RecurFormer.Cli.Benchmarking;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using RecurFormer.Toolkit.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer bench-products</c>: the matrix products of a distillation run's steps (<see cref="StepProducts"/>),
/// timed one by one through libtorch on each worker's share at once, as the run's workers compute them: how fast the
/// run's stages could go if nothing but their products took time, against how fast the run went. A ceiling, not a
/// forecast: it tells whether a throughput target can be reached by fusing and trimming the rest, or needs less
/// arithmetic (or faster products). A run with <c>--teacher-cache</c> is taken as reading every target from a warm
/// cache (no teacher products); the run that filled the cache also ran the teacher.
/// </summary>
public static class BenchProductsCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "The distill.json of the run to measure (its student, options and tokens/s).", Required = true };
        var student = new Option<string?>("--student") { Description = "The student checkpoint, when the one named in distill.json is gone (only its config.json is read)." };
        var repetitions = new Option<int>("--repetitions") { Description = "Timed repetitions of each product (after 2 warm-up runs); the median counts.", DefaultValueFactory = _ => 15 };
        var json = new Option<string>("--json") { Description = "Where to write the JSON report.", Required = true };
        var compute = new ComputeOptions(training: true);
        var command = new Command("bench-products", "Time the matrix products of a distill run's steps, on every worker's share at once: the tokens/s its stages would reach if nothing else took time, against what it measured.")
        {
            run, student, repetitions, json,
        };
        compute.AddTo(command);
        command.SetAction(parse =>
        {
            var runPath = parse.GetValue(run)!;
            var summary = ReadRun(runPath);
            var options = Options(summary, runPath);
            var studentFolder = parse.GetValue(student) ?? (string?)summary["student"] ?? throw new UserError("distill.json names no student: give --student");
            if (!File.Exists(Path.Combine(studentFolder, "config.json")))
            {
                throw new UserError($"{studentFolder}/config.json not found (give --student)");
            }
            if (ModelConfig.Load(studentFolder) is not TransformerConfig config
                || !Enumerable.Range(0, config.NumHiddenLayers).Any(l => config.MixerShape(l) is not null))
            {
                throw new UserError($"{studentFolder}: not a converted Transformer with Mamba mixers (recurformer convert --kind mamba)");
            }
            var reps = parse.GetValue(repetitions);
            if (reps < 1)
            {
                throw new UserError("--repetitions must be ≥ 1");
            }
            var workers = Math.Max(1, options.Workers);
            var totalThreads = parse.GetValue(compute.Threads) is > 0 and var given ? given : Environment.ProcessorCount;
            var threadsPerWorker = Math.Max(1, totalThreads / workers);
            var target = compute.Initialize(parse, threads: threadsPerWorker);
            if (target.Device.type != DeviceType.CPU)
            {
                // CUDA runs products asynchronously: timing them one by one would need a synchronisation around each.
                throw new UserError("bench-products measures the CPU: give --device cpu");
            }
            var teacherDType = options.TeacherDType ?? ScalarType.Float32;
            var matmul = options.MatmulDType ?? ScalarType.Float32;
            var sequencesPerShare = (options.BatchSize + workers - 1) / workers;   // the larger share: the step waits for it
            using var team = new KernelThreads(workers);   // the workers' threads, as distill's DistillTeam runs them
            team.SetLibTorchThreads(threadsPerWorker);

            var stages = new List<StageCeiling>();
            foreach (var stage in new[] { 1, 2 })
            {
                var measured = Throughput(summary, stage);
                if (measured is null)
                {
                    continue;   // the run had no steps of this stage
                }
                var length = stage == 1 ? options.SequenceLength : Math.Min(options.SequenceLength, options.Stage2SequenceLength);
                var products = stage == 1
                    ? StepProducts.Stage1(config, sequencesPerShare * length, teacherDType, matmul)
                    : StepProducts.Stage2(config, sequencesPerShare * length, teacherDType, matmul, options.Stage2Train, teacherCached: options.TeacherCache is not null);
                Console.Error.Write($"\rstage {stage}: timing {products.Count} products on {workers} worker(s) ...   ");
                var seconds = TimeOnWorkers(products, team, reps, target.Device);
                var tokensPerStep = (long)options.BatchSize * length;
                var parts = products.Select((p, i) => (p, s: seconds[i]))
                    .GroupBy(x => x.p.Part)
                    .Select(g => new PartTime(g.Key, g.Count(), Math.Round(g.Sum(x => x.p.Flops) / 1e9, 3), Math.Round(g.Sum(x => x.s) * 1e3, 2),
                        Math.Round(g.Sum(x => x.p.Flops) / g.Sum(x => x.s) / 1e9, 1)))
                    .ToArray();
                var productSeconds = seconds.Sum();
                stages.Add(new StageCeiling(stage, tokensPerStep, sequencesPerShare * length, Math.Round(products.Sum(p => p.Flops) / 1e9, 3),
                    Math.Round(productSeconds * 1e3, 2), Math.Round(tokensPerStep / productSeconds, 0),
                    Math.Round(measured.Value, 0), Math.Round(measured.Value / (tokensPerStep / productSeconds), 3), parts));
            }
            Console.Error.WriteLine();
            if (stages.Count == 0)
            {
                throw new UserError("distill.json has no throughput of either stage");
            }
            var report = new ProductReport(target.ToString(), workers, threadsPerWorker, teacherDType.ToString(), matmul.ToString(), options.TeacherCache is not null, stages);
            report.Print(Console.Out);
            BenchmarkReport.WriteJson(parse.GetValue(json)!, report);
            return 0;
        });
        return command;
    }

    private static JsonObject ReadRun(string path)
    {
        if (!File.Exists(path))
        {
            throw new UserError($"--run: {path} not found (the distill.json in a distill --out folder)");
        }
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new UserError($"--run: {path} is not a JSON object");
        }
        catch (JsonException error)
        {
            throw new UserError($"--run: {path} is not JSON: {error.Message}");
        }
    }

    private static DistillOptions Options(JsonObject summary, string path)
    {
        try
        {
            return summary["options"]?.Deserialize<DistillOptions>() ?? throw new UserError($"--run: {path} has no \"options\" (not a distill.json?)");
        }
        catch (JsonException error)
        {
            throw new UserError($"--run: the options in {path} cannot be read: {error.Message}");
        }
    }

    private static double? Throughput(JsonObject summary, int stage) =>
        (summary["throughput"] as JsonArray)?.OfType<JsonObject>().Where(t => (int?)t["stage"] == stage).Select(t => (double?)t["tokens_per_second"]).FirstOrDefault();

    /// <summary>
    /// Median seconds of each product, every worker timing the whole list on its own thread at the same time (so that
    /// the cores share memory bandwidth as in a step); per product, the slowest worker's median.
    /// </summary>
    private static double[] TimeOnWorkers(IReadOnlyList<StepProduct> products, KernelThreads team, int repetitions, Device device)
    {
        var results = new double[team.Count][];
        try
        {
            team.Run(w => results[w] = Time(products, repetitions, device));
        }
        catch (KernelThreadException error)
        {
            ExceptionDispatchInfo.Throw(error.InnerException!); // the worker's own error, for the CLI to report
        }
        return Enumerable.Range(0, products.Count).Select(i => results.Max(r => r[i])).ToArray();
    }

    private static double[] Time(IReadOnlyList<StepProduct> products, int repetitions, Device device)
    {
        var seconds = new double[products.Count];
        for (var i = 0; i < products.Count; i++)
        {
            var product = products[i];
            using var scope = NewDisposeScope();
            // The layouts autograd hands to the BLAS: x Wᵀ with W [out × in]; ∂y W; ∂yᵀ x.
            Func<Tensor> multiply = product.Pass switch
            {
                ProductPass.Forward => Operands(product.Rows, product.Inner, product.Columns, product.Inner, product.DType, device, (x, w) => x.mm(w.t())),
                ProductPass.InputGradient => Operands(product.Rows, product.Inner, product.Inner, product.Columns, product.DType, device, (dy, w) => dy.mm(w)),
                _ => Operands(product.Inner, product.Rows, product.Inner, product.Columns, product.DType, device, (dy, x) => dy.t().mm(x)),
            };
            var times = new List<double>();
            for (var rep = 0; rep < repetitions + 2; rep++)
            {
                var start = Stopwatch.GetTimestamp();
                multiply().Dispose();
                if (rep >= 2)
                {
                    times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                }
            }
            seconds[i] = BenchmarkRunner.Percentile([.. times], 0.5);
        }
        return seconds;
    }

    /// <summary>Two random operands of the given shapes, and the product of them as a closure.</summary>
    private static Func<Tensor> Operands(long rowsA, long colsA, long rowsB, long colsB, ScalarType dtype, Device device, Func<Tensor, Tensor, Tensor> product)
    {
        var a = randn(rowsA, colsA, dtype: dtype, device: device);
        var b = randn(rowsB, colsB, dtype: dtype, device: device);
        return () => product(a, b);
    }

    private sealed record PartTime(
        [property: JsonPropertyName("part")] string Part,
        [property: JsonPropertyName("products")] int Products,
        [property: JsonPropertyName("gflop")] double Gflop,
        [property: JsonPropertyName("ms")] double Milliseconds,
        [property: JsonPropertyName("gflop_per_s")] double GflopPerSecond);

    private sealed record StageCeiling(
        [property: JsonPropertyName("stage")] int Stage,
        [property: JsonPropertyName("tokens_per_step")] long TokensPerStep,
        [property: JsonPropertyName("tokens_per_worker_share")] long TokensPerShare,
        [property: JsonPropertyName("gflop_per_share")] double GflopPerShare,
        [property: JsonPropertyName("products_ms_per_step")] double ProductMilliseconds,
        [property: JsonPropertyName("ceiling_tokens_per_s")] double CeilingTokensPerSecond,
        [property: JsonPropertyName("measured_tokens_per_s")] double MeasuredTokensPerSecond,
        [property: JsonPropertyName("products_share_of_step")] double ProductShare,
        [property: JsonPropertyName("parts")] IReadOnlyList<PartTime> Parts);

    private sealed record ProductReport(
        [property: JsonPropertyName("device")] string Device,
        [property: JsonPropertyName("workers")] int Workers,
        [property: JsonPropertyName("threads_per_worker")] int ThreadsPerWorker,
        [property: JsonPropertyName("teacher_dtype")] string TeacherDType,
        [property: JsonPropertyName("matmul_dtype")] string MatmulDType,
        [property: JsonPropertyName("teacher_cache")] bool TeacherCache,
        [property: JsonPropertyName("stages")] IReadOnlyList<StageCeiling> Stages)
    {
        public void Print(TextWriter output)
        {
            output.WriteLine($"{Device}; {Workers} worker(s) × {ThreadsPerWorker} thread(s); teacher {TeacherDType}, products {MatmulDType}{(TeacherCache ? ", stage 2 reads the teacher cache" : "")}");
            output.WriteLine($"{"stage",5} {"tokens",7} {"GFLOP/share",12} {"products ms",12} {"ceiling tok/s",14} {"measured tok/s",15} {"products' share",16}");
            foreach (var stage in Stages)
            {
                output.WriteLine($"{stage.Stage,5} {stage.TokensPerStep,7} {stage.GflopPerShare,12:F2} {stage.ProductMilliseconds,12:F1} {stage.CeilingTokensPerSecond,14:F0} {stage.MeasuredTokensPerSecond,15:F0} {stage.ProductShare,16:P0}");
            }
            foreach (var stage in Stages)
            {
                output.WriteLine();
                output.WriteLine($"stage {stage.Stage}, one worker's share of {stage.TokensPerShare} tokens:");
                output.WriteLine($"{"part",-32} {"products",9} {"GFLOP",8} {"ms",8} {"GFLOP/s",9}");
                foreach (var part in stage.Parts)
                {
                    output.WriteLine($"{part.Part,-32} {part.Products,9} {part.Gflop,8:F2} {part.Milliseconds,8:F1} {part.GflopPerSecond,9:F0}");
                }
            }
        }
    }
}
