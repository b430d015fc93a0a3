using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Reporting;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>Where a run writes: the final student, resumable state, and the loss curves.</summary>
public sealed record DistillationPaths(string Out)
{
    public string Checkpoint => Path.Combine(Out, "checkpoint");
    public string State => Path.Combine(Checkpoint, "state.json");
    public string Optimizer => Path.Combine(Checkpoint, "optimizer.safetensors");
    public string Losses => Path.Combine(Out, "losses.json");
    public string Plot => Path.Combine(Out, "losses.png");
}

/// <summary>
/// A whole distillation: stage 1 then stage 2, with AdamW (linear warm-up, cosine decay to a tenth), gradient
/// clipping, a resumable checkpoint (student weights in float32, optimiser state, step, data position) every
/// <see cref="DistillOptions.CheckpointEvery"/> steps, and the final student written in <c>saveDType</c>.
/// </summary>
public sealed class DistillationRun(string teacherFolder, string studentFolder, Func<IEnumerable<string>> texts, DistillOptions options, ComputeTarget target)
{
    public Action<string>? Log { get; init; }

    /// <summary>Stop (with a resumable checkpoint) after this many steps of this invocation: time-sliced runs, tests.</summary>
    public int? StopAfterSteps { get; init; }

    /// <summary>
    /// Stop (with a resumable checkpoint) at the first step that ends after this much training time of this invocation:
    /// a run on a lent machine that must hand back what it has before the lease ends, whatever its speed turns out to be.
    /// </summary>
    public TimeSpan? StopAfterTime { get; init; }

    private readonly List<StageThroughput> _throughput = [];

    /// <summary>Training speed of each stage this invocation ran (after its first step, which pays for warm-up).</summary>
    public IReadOnlyList<StageThroughput> Throughput => _throughput;

    /// <summary>What identifies the training data (path, size, time) in the teacher cache's key.</summary>
    public string DataIdentity { get; init; } = "";

    public IReadOnlyList<LossRecord> Run(DistillationPaths paths, bool resume, ScalarType saveDType, ProgressLine? progress = null)
    {
        if (options.Workers < 1 || (options.Workers > 1 && target.Device.type != DeviceType.CPU))
        {
            throw new ArgumentException($"workers: at least 1, and 1 off the CPU (not {options.Workers} on {target.Device})");
        }
        manual_seed(options.Seed);
        var recipe = options.Recipe();
        var state = resume ? ResumeState.Load(paths.State) : new ResumeState(1, 0, 0, [], recipe);
        if (options.RecipeDifferences(state.Recipe) is [_, ..] differences)
        {
            throw new ArgumentException($"{paths.Out} is a run with other options ({string.Join("; ", differences)}): resume it with its own, or start a new run elsewhere with {paths.Checkpoint} as the student");
        }
        var records = state.Records.ToList();
        var source = resume ? paths.Checkpoint : studentFolder;
        // One teacher per worker: each worker's models are its own (DistillTeam).
        using var teachers = new Teachers(Enumerable.Range(0, options.Workers)
            .Select(_ => CausalLMLoader.FromPretrained(teacherFolder, target with { DType = options.TeacherDType ?? target.DType })).ToArray());
        var teacher = teachers.Models[0];
        using var student = CausalLMLoader.FromPretrained(source, target);
        var tokenizer = CheckpointTokenizer.FromPretrained(studentFolder);
        using var data = new TrainingSequences(texts, tokenizer, options.SequenceLength, options.Seed);
        data.Skip(state.Sequences);
        using var distiller = new Distiller(teacher, student, options) { TeacherCache = TeacherCache(), AnswerWeighting = AnswerWeighting.For(tokenizer, options) };
        var clock = Stopwatch.StartNew();
        var total = options.Stage1Steps + options.Stage2Steps;
        var stepsThisRun = 0;
        progress?.Resume(records.Count);

        for (var stage = state.Stage; stage <= 2; stage++)
        {
            var steps = stage == 1 ? options.Stage1Steps : options.Stage2Steps;
            var startStep = stage == state.Stage ? state.Step : 0;
            if (startStep >= steps)
            {
                continue;
            }
            var parameters = stage == 1 ? distiller.Stage1Parameters() : distiller.Stage2Parameters(options.Stage2Train);
            foreach (var parameter in ((nn.Module)student).parameters())
            {
                parameter.requires_grad = false;
            }
            foreach (var parameter in parameters)
            {
                parameter.requires_grad = true;
            }
            var peak = stage == 1 ? options.Stage1LearningRate : options.Stage2LearningRate;
            // Stage 2 runs the whole student: in bfloat16 products when asked, on copies (float32 master weights here).
            var lowPrecision = stage == 2 && options.MatmulDType is { } low && low != target.DType ? low : (ScalarType?)null;
            var tokensPerStep = (long)options.BatchSize * (stage == 1 ? options.SequenceLength : Math.Min(options.SequenceLength, options.Stage2SequenceLength));
            var throughput = new StageThroughput(stage, tokensPerStep);
            _throughput.Add(throughput);
            using var team = new DistillTeam(teachers.Models, student, source, target with { DType = lowPrecision ?? target.DType }, lowPrecision is not null,
                parameters, options, distiller.TeacherCache, distiller.AnswerWeighting) { Phases = throughput.Phases };
            using var optimizer = new TeamAdamW(parameters, peak, 0.9, 0.99, 1e-8, options.WeightDecay, team.Threads);
            if (startStep > 0 && File.Exists(paths.Optimizer))
            {
                optimizer.Load(paths.Optimizer);
            }
            else if (startStep > 0)
            {
                Log?.Invoke($"no optimiser state in {paths.Checkpoint} (a checkpoint of an earlier version keeps it in optimizer.bin): AdamW's moments start afresh");
            }
            for (var step = startStep; step < steps; step++)
            {
                var rate = LearningRate(peak, step, steps);
                optimizer.LearningRate = rate;
                var firstSequence = data.Consumed;
                var batch = Enumerable.Range(0, options.BatchSize).Select(_ => data.Next()).ToArray();
                LossRecord record;
                for (var attempt = 1; ; attempt++)
                {
                    using (throughput.Phases.Time("optimizer"))
                    {
                        optimizer.ZeroGrad();
                    }
                    team.ClearGradients(); // of a failed attempt
                    try
                    {
                        record = Backward(team, stage, step, batch, firstSequence, rate, clock);
                        break;
                    }
                    catch (ExternalException error) when (attempt == 1)
                    {
                        // libtorch failed inside the forward or backward, before the optimiser touched anything: the
                        // step is redone once from the same batch. TorchSharp 0.107 frees a temporary Scalar in its
                        // finalizer, which can run while the native operation that was given it still reads it
                        // (docs/conversion.md); a real error fails again and stops the run.
                        Log?.Invoke($"stage {stage} step {step + 1} failed ({error.Message.Split('\n')[0]}); running it again");
                        throughput.Phases.DiscardStep(); // the profile times the attempt that counts
                    }
                }
                using (throughput.Phases.Time("optimizer"))
                {
                    if (!optimizer.Step(options.ClipNorm))
                    {
                        Log?.Invoke($"stage {stage} step {step + 1}: the gradients' norm is not finite; the step is skipped (no weight changed)");
                    }
                }
                records.Add(record);
                throughput.StepDone(clock.Elapsed.TotalSeconds);
                if (progress is not null)
                {
                    var loss = record.Kl is { } kl ? $"stage 2 loss {record.Loss:F4} (KL {kl:F4}, CE {record.Ce:F4})" : $"stage 1 loss {record.Loss:F4}";
                    progress.Detail = throughput.TokensPerSecond is { } speed ? $"{loss}, {speed:F0} tokens/s" : loss;
                    progress.Report(records.Count);
                }
                var last = step + 1 == steps;
                var stopping = (++stepsThisRun >= StopAfterSteps || clock.Elapsed >= StopAfterTime) && !last;
                if ((step + 1) % options.CheckpointEvery == 0 || last || stopping)
                {
                    var next = last ? new ResumeState(stage + 1, 0, data.Consumed, records, recipe) : new ResumeState(stage, step + 1, data.Consumed, records, recipe);
                    SaveCheckpoint(paths, student, optimizer, next, last);
                    WriteLosses(paths, records);
                }
                if (stopping)
                {
                    Log?.Invoke($"stopped after {stepsThisRun} steps ({clock.Elapsed.TotalSeconds:F0} s); continue with --resume, or use {paths.Checkpoint}");
                    return records;
                }
            }
        }
        CheckpointFolder.Write(paths.Out, student.Config.Raw, ((TransformerConfig)student.Config).Hybrid.ToJson(),
            CheckpointFolder.StateDict(student), saveDType, studentFolder);
        WriteLosses(paths, records);
        Log?.Invoke($"distilled {total} steps in {clock.Elapsed.TotalSeconds:F0} s");
        if (distiller.TeacherCache is { } cache)
        {
            Log?.Invoke($"teacher cache: {cache.Hits} sequences read, {cache.Misses} computed");
        }
        return records;
    }

    /// <summary>Testing only: throws a libtorch-like error after the workers of the given (stage, step) attempt, while gradients are half summed.</summary>
    internal Func<int, int, bool>? FailAfterWorkers { get; init; }

    /// <summary>One step's forward and backward over the team: the loss record, gradients in the master's trained parameters.</summary>
    private LossRecord Backward(DistillTeam team, int stage, int step, long[][] batch, long firstSequence, double rate, Stopwatch clock)
    {
        team.AfterWorkers = FailAfterWorkers is { } fail && fail(stage, step + 1)
            ? () => throw new ExternalException($"injected failure at stage {stage} step {step + 1}")
            : null;
        if (stage == 1)
        {
            var (loss, layers) = team.Stage1Backward(batch);
            return new LossRecord(1, step + 1, loss, null, null, layers, rate, clock.Elapsed.TotalSeconds);
        }
        var (total, kl, ce) = team.Stage2Backward(batch.Select(b => b[..Math.Min(b.Length, options.Stage2SequenceLength)]).ToArray(),
            Enumerable.Range(0, batch.Length).Select(i => firstSequence + i).ToArray());
        return new LossRecord(2, step + 1, total, kl, ce, null, rate, clock.Elapsed.TotalSeconds);
    }

    /// <summary>The teacher cache of this run's teacher, data, lengths and seed, when asked for.</summary>
    private TeacherLogitCache? TeacherCache()
    {
        if (options.TeacherCache is not { } folder)
        {
            return null;
        }
        var weights = new DirectoryInfo(teacherFolder).GetFiles("*.safetensors").OrderBy(f => f.Name)
            .Select(f => $"{f.Name}:{f.Length}:{f.LastWriteTimeUtc.Ticks}");
        var key = $"teacher={Path.GetFullPath(teacherFolder)}[{string.Join(',', weights)}]|dtype={options.TeacherDType ?? target.DType}|data={DataIdentity}"
            + $"|length={options.SequenceLength}|stage2={options.Stage2SequenceLength}|seed={options.Seed}";
        return new TeacherLogitCache(folder, key, options.TeacherTopK);
    }

    /// <summary>The teachers of a run's workers, disposed together.</summary>
    private sealed record Teachers(ICausalLM[] Models) : IDisposable
    {
        public void Dispose()
        {
            foreach (var model in Models)
            {
                model.Dispose();
            }
        }
    }

    /// <summary>Linear warm-up over the first steps, then cosine decay to a tenth of the peak.</summary>
    public double LearningRate(double peak, int step, int steps)
    {
        if (step < options.WarmupSteps)
        {
            return peak * (step + 1) / options.WarmupSteps;
        }
        var progress = (double)(step - options.WarmupSteps) / Math.Max(1, steps - options.WarmupSteps);
        return peak * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    private void SaveCheckpoint(DistillationPaths paths, ICausalLM student, TeamAdamW optimizer, ResumeState state, bool stageDone)
    {
        CheckpointFolder.Write(paths.Checkpoint, student.Config.Raw, ((TransformerConfig)student.Config).Hybrid.ToJson(),
            CheckpointFolder.StateDict(student), ScalarType.Float32, studentFolder);
        if (stageDone)
        {
            File.Delete(paths.Optimizer); // the next stage trains other parameters with a fresh optimiser
        }
        else
        {
            optimizer.Save(paths.Optimizer);
        }
        state.Save(paths.State);
    }

    private static void WriteLosses(DistillationPaths paths, IReadOnlyList<LossRecord> records)
    {
        File.WriteAllText(paths.Losses, new JsonArray(records.Select(r => (JsonNode)r.ToJson()).ToArray()).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var stage1 = records.Where(r => r.Stage == 1).ToArray();
        var stage2 = records.Where(r => r.Stage == 2).ToArray();
        var offset = stage1.Length;
        Charts.Lines(paths.Plot,
        [
            ("stage 1: relative layer-local loss", stage1.Select(r => (double)r.Step).ToArray(), stage1.Select(r => r.Loss).ToArray()),
            ("stage 2: KL to teacher", stage2.Select(r => (double)(offset + r.Step)).ToArray(), stage2.Select(r => r.Kl ?? 0).ToArray()),
            ("stage 2: next-token CE", stage2.Select(r => (double)(offset + r.Step)).ToArray(), stage2.Select(r => r.Ce ?? 0).ToArray()),
        ], "Distillation losses", "step", "loss", logY: true);
    }
}

/// <summary>
/// Where a run stands: the stage and step to do next, the data sequences consumed, the losses so far, and the options
/// that set its course (<see cref="DistillOptions.Recipe"/>; empty in a checkpoint of an earlier version).
/// </summary>
public sealed record ResumeState(int Stage, int Step, long Sequences, IReadOnlyList<LossRecord> Records, IReadOnlyDictionary<string, string> Recipe)
{
    public void Save(string path) => File.WriteAllText(path, new JsonObject
    {
        ["stage"] = Stage,
        ["step"] = Step,
        ["sequences"] = Sequences,
        ["recipe"] = new JsonObject(Recipe.Select(entry => KeyValuePair.Create(entry.Key, (JsonNode?)entry.Value))),
        ["records"] = new JsonArray(Records.Select(r => (JsonNode)r.ToJson()).ToArray()),
    }.ToJsonString());

    public static ResumeState Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no checkpoint to resume from");
        }
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        return new ResumeState(root["stage"]!.GetValue<int>(), root["step"]!.GetValue<int>(), root["sequences"]!.GetValue<long>(),
            root["records"]!.AsArray().Select(r => LossRecord.FromJson(r!)).ToArray(),
            root["recipe"] is JsonObject recipe ? recipe.ToDictionary(entry => entry.Key, entry => entry.Value?.ToString() ?? "") : new Dictionary<string, string>());
    }
}

/// <summary>
/// Tokens per second of one stage in one invocation, counted from the end of its first step (which pays for
/// loading, allocation and the JIT) to the end of its last: optimiser steps and checkpoints included.
/// </summary>
public sealed class StageThroughput(int stage, long tokensPerStep)
{
    private double? _firstStepEnd;
    private double _lastStepEnd;

    public int Stage => stage;
    public long TokensPerStep => tokensPerStep;
    public int Steps { get; private set; }

    /// <summary>Where the steps' time went (after the first step), by phase: a profile of a step in every run's distill.json.</summary>
    public StepPhases Phases { get; } = new();

    public void StepDone(double seconds)
    {
        Steps++;
        Phases.StepDone();
        _firstStepEnd ??= seconds;
        _lastStepEnd = seconds;
    }

    /// <summary>Null until two steps have run.</summary>
    public double? TokensPerSecond => Steps >= 2 && _lastStepEnd > _firstStepEnd ? (Steps - 1) * tokensPerStep / (_lastStepEnd - _firstStepEnd!.Value) : null;

    public JsonObject ToJson() => new()
    {
        ["stage"] = stage,
        ["steps"] = Steps,
        ["tokens_per_step"] = tokensPerStep,
        ["tokens_per_second"] = TokensPerSecond is { } rate ? Math.Round(rate, 1) : null,
        ["seconds_per_step"] = TokensPerSecond is { } r ? Math.Round(tokensPerStep / r, 4) : null,
        ["seconds_per_step_by_phase"] = Phases.ToJson(),
    };
}

/// <summary>
/// Seconds per step spent in each named phase of a step (the workers' forward and backward, with each worker's parts;
/// in stage 1 adding the mixers' gradients and how far apart the workers' teachers ran; summing the replicas' gradients;
/// the optimiser), counted from the second step on like <see cref="StageThroughput"/>. The phases outside the workers
/// end with a wait for the slowest thread: they are what limits more workers.
/// </summary>
public sealed class StepPhases
{
    private readonly Dictionary<string, double> _seconds = [];
    private readonly Dictionary<string, double> _thisStep = [];
    private int _counted;
    private bool _first = true;

    /// <summary>Times the phase until the returned handle is disposed (phases may repeat within a step; they add up).</summary>
    public IDisposable Time(string phase) => new Timing(this, phase, Stopwatch.GetTimestamp());

    public void Add(string phase, double seconds) => _thisStep[phase] = _thisStep.GetValueOrDefault(phase) + seconds;

    /// <summary>Forgets what this step has timed so far (an attempt that failed and is run again).</summary>
    public void DiscardStep() => _thisStep.Clear();

    public void StepDone()
    {
        if (!_first)
        {
            foreach (var (phase, seconds) in _thisStep)
            {
                _seconds[phase] = _seconds.GetValueOrDefault(phase) + seconds;
            }
            _counted++;
        }
        _first = false;
        _thisStep.Clear();
    }

    public JsonObject? ToJson() => _counted == 0 ? null
        : new JsonObject(_seconds.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)Math.Round(p.Value / _counted, 4))));

    private sealed class Timing(StepPhases owner, string phase, long start) : IDisposable
    {
        public void Dispose() => owner.Add(phase, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }
}
