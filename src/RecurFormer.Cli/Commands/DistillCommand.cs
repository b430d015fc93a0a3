using System.CommandLine;
using System.Text.Json.Nodes;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Distillation;
using RecurFormer.Toolkit.Reporting;
using static RecurFormer.Cli.Commands.ToolkitCommandSupport;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer distill</c>: continual training of a converted (Mamba-kind) student against its source model:
/// stage 1 layer-local, stage 2 end to end. Resumable, deterministic with --seed, loss curves as JSON and PNG.
/// </summary>
public static class DistillCommand
{
    public static Command Create()
    {
        var teacher = new Option<string>("--teacher") { Description = "The source Transformer checkpoint.", Required = true };
        var student = new Option<string>("--student") { Description = "The converted checkpoint (recurformer convert --kind mamba or window-mamba).", Required = true };
        var data = new Option<string>("--data") { Description = "Training text: .jsonl or .jsonl.xz with a \"text\" field per line.", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Output folder: the distilled checkpoint, losses.json, losses.png, distill.json, checkpoint/.", Required = true };
        var force = Force();
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its last checkpoint." };
        var stage1 = new Option<int>("--stage1-steps") { Description = "Optimiser steps of stage 1 (layer-local).", DefaultValueFactory = _ => 200 };
        var stage2 = new Option<int>("--stage2-steps") { Description = "Optimiser steps of stage 2 (end to end).", DefaultValueFactory = _ => 200 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 4 };
        var length = new Option<int>("--length") { Description = "Tokens per training sequence.", DefaultValueFactory = _ => 256 };
        var length2 = new Option<int>("--stage2-length") { Description = "Tokens per sequence in stage 2 (the first tokens of each training sequence).", DefaultValueFactory = _ => 128 };
        var lr1 = new Option<double>("--lr1") { Description = "Peak learning rate of stage 1.", DefaultValueFactory = _ => 3e-3 };
        var lr2 = new Option<double>("--lr2") { Description = "Peak learning rate of stage 2.", DefaultValueFactory = _ => 5e-4 };
        var klWeight = new Option<double>("--kl-weight") { Description = "Weight of KL(teacher ‖ student) in stage 2.", DefaultValueFactory = _ => 1.0 };
        var ceWeight = new Option<double>("--ce-weight") { Description = "Weight of the next-token cross-entropy in stage 2.", DefaultValueFactory = _ => 1.0 };
        var answerWeight = new Option<double>("--answer-weight")
        {
            Description = "Stage 2's weight of the positions that predict an assistant answer's first tokens (--answer-tokens), against 1 for every other position; KL and CE become weighted means.",
            DefaultValueFactory = _ => 1.0,
        };
        var answerTokens = new Option<int>("--answer-tokens") { Description = "How many of an answer's first tokens --answer-weight covers.", DefaultValueFactory = _ => 16 };
        var train = new Option<string>("--train") { Description = "What trains in stage 2: mamba, and optionally o_proj, attention (all of self_attn), or all; comma-separated.", DefaultValueFactory = _ => "mamba" };
        var seed = new Option<long>("--seed") { Description = "Seed of the data order and of torch.", DefaultValueFactory = _ => 0 };
        var every = new Option<int>("--checkpoint-every") { Description = "Write a resumable checkpoint every N steps.", DefaultValueFactory = _ => 50 };
        var stopAfter = new Option<int?>("--stop-after") { Description = "Stop after this many steps of this invocation, leaving a checkpoint to --resume from (time-sliced runs)." };
        var stopAfterSeconds = new Option<double?>("--stop-after-seconds") { Description = "Stop at the first step that ends after this many seconds of training in this invocation, leaving a checkpoint to --resume from (leased machines)." };
        var teacherDType = new Option<string>("--teacher-dtype")
        {
            Description = "The teacher's compute dtype (it only runs forward): auto (bfloat16 on CUDA and on CPUs with bfloat16 instructions, where it is faster; else the training dtype), float32, bfloat16 or float16.",
            DefaultValueFactory = _ => "auto",
        };
        var matmulDType = new Option<string>("--matmul-dtype")
        {
            Description = "dtype of the matrix products in training (stage 1: the mixers' in_proj and out_proj; stage 2: the whole student, through a copy; weights and optimiser stay float32): auto (bfloat16 on CUDA and on CPUs with bfloat16 instructions, where it is faster; else float32), float32 or bfloat16.",
            DefaultValueFactory = _ => "auto",
        };
        var teacherCache = new Option<string?>("--teacher-cache")
        {
            Description = "Folder of the teacher's top-k stage-2 targets, written once per shard of 256 training sequences and read by every later run with the same teacher, data, lengths and seed; the KL then covers the top-k tokens plus one bucket for the rest.",
        };
        var topK = new Option<int>("--teacher-top-k") { Description = "Tokens per position in the teacher cache.", DefaultValueFactory = _ => 64 };
        var saveDType = new Option<string>("--save-dtype") { Description = "dtype of the final checkpoint: bfloat16, float16 or float32.", DefaultValueFactory = _ => "bfloat16" };
        var workers = new Option<int?>("--workers")
        {
            Description = "Workers that each run a share of every batch on their own thread (CPU), sharing --threads; their gradients are summed. "
                + "Each holds its own copy of the teacher and the student in memory. Default: 2 on a CPU with 2 or more threads (at most --batch), else 1.",
        };
        var onBadLine = OnBadLine();
        var compute = new ComputeOptions(training: true);

        var command = new Command("distill", "Distill a converted student from its teacher (stage 1 layer-local, stage 2 end to end).")
        {
            teacher, student, data, output, force, resume, stage1, stage2, batch, length, length2, lr1, lr2, klWeight, ceWeight, answerWeight, answerTokens, train, seed, every, stopAfter, stopAfterSeconds, teacherDType, matmulDType, teacherCache, topK, saveDType, workers, onBadLine,
        };
        compute.AddTo(command);
        command.Subcommands.Add(Answers());
        command.SetAction(parse => Run(() =>
        {
            var teacherFolder = parse.GetValue(teacher)!;
            var studentFolder = parse.GetValue(student)!;
            RequireFolder(teacherFolder, "--teacher");
            RequireFolder(studentFolder, "--student");
            var dataPath = parse.GetValue(data)!;
            RequireFile(dataPath, "--data");
            var options = new DistillOptions
            {
                Stage1Steps = parse.GetValue(stage1),
                Stage2Steps = parse.GetValue(stage2),
                BatchSize = parse.GetValue(batch),
                SequenceLength = parse.GetValue(length),
                Stage2SequenceLength = parse.GetValue(length2),
                Stage1LearningRate = parse.GetValue(lr1),
                Stage2LearningRate = parse.GetValue(lr2),
                KlWeight = parse.GetValue(klWeight),
                CeWeight = parse.GetValue(ceWeight),
                AnswerWeight = parse.GetValue(answerWeight),
                AnswerTokens = parse.GetValue(answerTokens),
                Stage2Train = Parts(parse.GetValue(train)!),
                Seed = parse.GetValue(seed),
                CheckpointEvery = parse.GetValue(every),
                TeacherCache = parse.GetValue(teacherCache),
                TeacherTopK = parse.GetValue(topK),
            };
            var outFolder = parse.GetValue(output)!;
            var paths = new DistillationPaths(outFolder);
            var resuming = parse.GetValue(resume);
            if (resuming && File.Exists(paths.State) && options.RecipeDifferences(ResumeState.Load(paths.State).Recipe) is [_, ..] differences)
            {
                // Before the other checks and any model load: a resume that forgot one of the run's flags would otherwise
                // train on under another schedule, or end at once and write the half-trained checkpoint over the run's result.
                var listed = differences.Select(d => $"{RecipeFlags.GetValueOrDefault(d.Name, d.Name)} {d.Checkpoint} in the checkpoint, {d.Asked} now");
                throw new UserError($"--resume: {outFolder} is a run with other options ({string.Join("; ", listed)}); give it the same flags, or start a new run with another --out and --student {paths.Checkpoint}");
            }
            if (parse.GetValue(stopAfterSeconds) is { } limit && !(limit > 0 && limit <= TimeSpan.MaxValue.TotalSeconds / 2))
            {
                throw new UserError($"--stop-after-seconds must be a positive number of seconds, not {limit}");
            }
            if (ModelConfig.Load(studentFolder) is TransformerConfig studentConfig && Distiller.Stage1Refusal(studentConfig, options.Stage1Steps) is { } refusal)
            {
                throw new UserError($"{studentFolder}: {refusal}");
            }
            if (options.Stage1Steps < 0 || options.Stage2Steps < 0 || options.Stage1Steps + options.Stage2Steps == 0)
            {
                throw new UserError("--stage1-steps and --stage2-steps must be ≥ 0, and not both 0");
            }
            if (!(options.AnswerWeight > 0) || options.AnswerTokens < 0)
            {
                throw new UserError("--answer-weight must be > 0 and --answer-tokens ≥ 0");
            }
            if (options.TeacherTopK < 1)
            {
                throw new UserError("--teacher-top-k must be ≥ 1");
            }
            if (options.BatchSize < 1 || options.SequenceLength < 2 || options.Stage2SequenceLength < 2 || options.CheckpointEvery < 1 || options.Stage1LearningRate <= 0 || options.Stage2LearningRate <= 0)
            {
                throw new UserError("--batch, --checkpoint-every ≥ 1, --length, --stage2-length ≥ 2 and learning rates > 0");
            }
            var onCpu = IsCpu(parse.GetValue(compute.Device)!);
            var threads = parse.GetValue(compute.Threads) is > 0 and var given ? given : Environment.ProcessorCount;
            // Two workers take the small operations of a small model's step onto both cores; more would mostly add
            // copies of the models, and a larger model's operations split well over libtorch's threads anyway.
            var workerCount = parse.GetValue(workers) ?? (onCpu ? Math.Clamp(threads, 1, Math.Min(2, options.BatchSize)) : 1);
            if (workerCount < 1 || workerCount > options.BatchSize || (!onCpu && workerCount > 1))
            {
                throw new UserError($"--workers must be between 1 and --batch ({options.BatchSize}), and 1 off the CPU; not {workerCount}");
            }
            var dtype = parse.GetValue(saveDType)!.ToLowerInvariant() switch
            {
                "bfloat16" or "bf16" => TorchSharp.torch.ScalarType.BFloat16,
                "float16" or "fp16" => TorchSharp.torch.ScalarType.Float16,
                "float32" or "fp32" => TorchSharp.torch.ScalarType.Float32,
                var other => throw new UserError($"--save-dtype must be bfloat16, float16 or float32, not '{other}'"),
            };
            if (resuming)
            {
                if (!File.Exists(paths.State))
                {
                    throw new UserError($"--resume: {paths.State} not found (no earlier run of distill in {outFolder})");
                }
            }
            else
            {
                CheckpointFolder.Prepare(outFolder, parse.GetValue(force));
            }
            var policy = Policy(parse.GetValue(onBadLine)!);
            // The workers share the threads: each runs its own libtorch operations and scan kernels on its share.
            var target = compute.Initialize(parse, threads: onCpu ? Math.Max(1, threads / workerCount) : null);
            options = options with
            {
                Workers = workerCount,
                TeacherDType = LowPrecision(parse.GetValue(teacherDType)!, target, "--teacher-dtype"),
                MatmulDType = LowPrecision(parse.GetValue(matmulDType)!, target, "--matmul-dtype"),
            };
            var readers = new List<JsonlReader>();
            IEnumerable<string> Texts()
            {
                var reader = new JsonlReader(dataPath, policy);
                readers.Add(reader);
                return reader.ReadTexts().Select(t => t.Text);
            }
            var dataFile = new FileInfo(dataPath);
            var run = new DistillationRun(teacherFolder, studentFolder, Texts, options, target)
            {
                Log = message => Console.Error.WriteLine(message),
                StopAfterSteps = parse.GetValue(stopAfter),
                StopAfterTime = parse.GetValue(stopAfterSeconds) is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
                DataIdentity = $"{dataFile.FullName}:{dataFile.Length}:{dataFile.LastWriteTimeUtc.Ticks}",
            };
            var progress = new ProgressLine("distill", options.Stage1Steps + options.Stage2Steps);
            var records = run.Run(paths, resuming, dtype, progress);
            readers.ForEach(ReportSkipped);

            var summary = new JsonObject
            {
                ["teacher"] = teacherFolder,
                ["student"] = studentFolder,
                ["data"] = dataPath,
                ["out"] = outFolder,
                ["compute"] = target.ToString(),
                ["options"] = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(options)),
                ["stage1_tokens"] = (long)options.BatchSize * options.SequenceLength * options.Stage1Steps,
                ["stage2_tokens"] = (long)options.BatchSize * Math.Min(options.SequenceLength, options.Stage2SequenceLength) * options.Stage2Steps,
                ["throughput"] = new JsonArray(run.Throughput.Select(t => (JsonNode)t.ToJson()).ToArray()),
                ["seconds"] = records.Count > 0 ? records[^1].Seconds : 0,
                ["stage1_first_loss"] = records.FirstOrDefault(r => r.Stage == 1)?.Loss,
                ["stage1_last_loss"] = records.LastOrDefault(r => r.Stage == 1)?.Loss,
                ["stage2_first"] = records.FirstOrDefault(r => r.Stage == 2)?.ToJson(),
                ["stage2_last"] = records.LastOrDefault(r => r.Stage == 2)?.ToJson(),
            };
            WriteJson(Path.Combine(outFolder, "distill.json"), summary);
            Console.WriteLine(Json(summary));
            return 0;
        }));
        return command;
    }

    /// <summary>The flag of each option in a run's recipe (<see cref="DistillOptions.Recipe"/>) that has one.</summary>
    private static readonly Dictionary<string, string> RecipeFlags = new()
    {
        [nameof(DistillOptions.Stage1Steps)] = "--stage1-steps",
        [nameof(DistillOptions.Stage2Steps)] = "--stage2-steps",
        [nameof(DistillOptions.BatchSize)] = "--batch",
        [nameof(DistillOptions.SequenceLength)] = "--length",
        [nameof(DistillOptions.Stage2SequenceLength)] = "--stage2-length",
        [nameof(DistillOptions.Stage1LearningRate)] = "--lr1",
        [nameof(DistillOptions.Stage2LearningRate)] = "--lr2",
        [nameof(DistillOptions.KlWeight)] = "--kl-weight",
        [nameof(DistillOptions.CeWeight)] = "--ce-weight",
        [nameof(DistillOptions.AnswerWeight)] = "--answer-weight",
        [nameof(DistillOptions.AnswerTokens)] = "--answer-tokens",
        [nameof(DistillOptions.Stage2Train)] = "--train",
        [nameof(DistillOptions.Seed)] = "--seed",
    };

    /// <summary>
    /// <c>recurformer distill answers</c>: a training file whose conversations carry the teacher's own greedy answers,
    /// for sequence-level distillation (<see cref="TeacherAnswers"/>).
    /// </summary>
    private static Command Answers()
    {
        var teacher = new Option<string>("--teacher") { Description = "The source Transformer checkpoint that answers.", Required = true };
        var data = new Option<string>("--data") { Description = "Training text (.jsonl or .jsonl.xz, a \"text\" field per line); its ChatML conversations are answered, its other lines left out.", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "The .jsonl to write: {\"text\": conversation} per line, the first assistant answer the teacher's.", Required = true };
        var force = new Option<bool>("--force") { Description = "Overwrite --out if it exists." };
        var limit = new Option<int?>("--limit") { Description = "Answer only the first N conversations." };
        var maxAnswer = new Option<int>("--max-answer-tokens") { Description = "Most tokens per answer; an answer that reaches it is left out (it may have been cut off).", DefaultValueFactory = _ => 96 };
        var batch = new Option<int>("--batch") { Description = "Conversations decoded at once.", DefaultValueFactory = _ => 32 };
        var onBadLine = OnBadLine();
        var compute = new ComputeOptions();
        var command = new Command("answers", "Write the training conversations with the teacher's greedy answers (data for sequence-level distillation).")
        {
            teacher, data, output, force, limit, maxAnswer, batch, onBadLine,
        };
        compute.AddTo(command);
        command.SetAction(parse => Run(() =>
        {
            var teacherFolder = parse.GetValue(teacher)!;
            RequireFolder(teacherFolder, "--teacher");
            RequireFile(parse.GetValue(data)!, "--data");
            var path = parse.GetValue(output)!;
            if (File.Exists(path) && !parse.GetValue(force))
            {
                throw new UserError($"--out {path} exists; give --force to overwrite it");
            }
            if (parse.GetValue(limit) is < 1 || parse.GetValue(batch) < 1 || parse.GetValue(maxAnswer) < 1)
            {
                throw new UserError("--limit, --batch and --max-answer-tokens must be at least 1");
            }
            var reader = new JsonlReader(parse.GetValue(data)!, Policy(parse.GetValue(onBadLine)!));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var target = compute.Initialize(parse);
            var tokenizer = RecurFormer.Tokenization.CheckpointTokenizer.FromPretrained(teacherFolder);
            using var model = RecurFormer.Model.CausalLM.CausalLMLoader.FromPretrained(teacherFolder, target);
            var answers = new TeacherAnswers(model, tokenizer, parse.GetValue(maxAnswer), parse.GetValue(batch));
            // One pass to count what will be answered (seconds, against the minutes of answering), so that the progress
            // line has its total and an ETA.
            var total = new JsonlReader(reader.Path, MalformedLines.Skip).ReadTexts()
                .Where(l => TeacherAnswers.IsConversation(l.Text)).Take(parse.GetValue(limit) ?? int.MaxValue).Count();
            var folder = Path.GetDirectoryName(Path.GetFullPath(path));
            if (folder is not null)
            {
                Directory.CreateDirectory(folder);
            }
            // Written beside the output and moved over it at the end, so that a stopped run leaves no half file.
            var partial = path + ".partial";
            TeacherAnswerCounts counts;
            try
            {
                using (var writer = new StreamWriter(partial, append: false, new System.Text.UTF8Encoding(false)))
                {
                    counts = answers.Write(reader.ReadTexts().Select(l => l.Text), writer, parse.GetValue(limit), new ProgressLine("answers", total));
                }
                File.Move(partial, path, overwrite: true);
            }
            catch
            {
                try
                {
                    File.Delete(partial);
                }
                catch (IOException)
                {
                    // The run's own error is the one to report.
                }
                throw;
            }
            ReportSkipped(reader);
            Console.WriteLine(Json(new JsonObject
            {
                ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
                ["conversations"] = counts.Conversations,
                ["written"] = counts.Written,
                ["same_as_before"] = counts.SameAsBefore,
                ["rewritten"] = counts.Rewritten,
                ["dropped_at_the_token_limit"] = counts.Dropped,
                ["other_lines_left_out"] = counts.OtherLines,
                ["out"] = path,
            }));
            return 0;
        }));
        return command;
    }

    /// <summary>Whether --device names the CPU, spelled as the runtime accepts it (before libtorch is loaded).</summary>
    private static bool IsCpu(string device) => device.Trim().Equals("cpu", StringComparison.OrdinalIgnoreCase);

    /// <summary>auto: bfloat16 where inference's auto picks it (measured faster there), else the training dtype.</summary>
    private static TorchSharp.torch.ScalarType LowPrecision(string text, RecurFormer.Model.Runtime.ComputeTarget target, string option)
    {
        try
        {
            return text.Trim().ToLowerInvariant() is "auto" or ""
                ? TorchRuntime.ParseDType("auto", target.Device) == TorchSharp.torch.ScalarType.BFloat16 ? TorchSharp.torch.ScalarType.BFloat16 : target.DType
                : TorchRuntime.ParseDType(text, target.Device);
        }
        catch (TorchRuntimeException error)
        {
            throw new UserError($"{option}: {error.Message}");
        }
    }

    private static TrainedParts Parts(string text)
    {
        var parts = TrainedParts.Mamba;
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            parts |= part.ToLowerInvariant() switch
            {
                "mamba" => TrainedParts.Mamba,
                "o_proj" => TrainedParts.OutputProjection,
                "attention" => TrainedParts.Attention,
                "all" => TrainedParts.All,
                _ => throw new UserError($"--train: '{part}' is not one of mamba, o_proj, attention, all"),
            };
        }
        return parts;
    }
}
