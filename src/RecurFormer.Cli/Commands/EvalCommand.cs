using System.CommandLine;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Evaluation;
using RecurFormer.Toolkit.Reporting;
using static RecurFormer.Cli.Commands.ToolkitCommandSupport;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer eval</c>: perplexity (per kind, overall, packed 512-token sequences by position), greedy QA exact
/// match and token F1, and cache cost of a checkpoint, optionally next to a baseline checkpoint with ratios.
/// </summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Checkpoint folder to evaluate.", Required = true };
        var data = new Option<string>("--data") { Description = "validation.jsonl: {kind: doc|qa, text[, question, answer]} per line.", Required = true };
        var json = new Option<string>("--json") { Description = "Where to write the JSON report.", Required = true };
        var baseline = new Option<string?>("--baseline") { Description = "A second checkpoint (e.g. the source Transformer) evaluated the same way, printed side by side with ratios, then compared line by line with paired intervals and sign tests (paired); with question answering, where the two models' answers part (qa_agreement)." };
        var limit = new Option<int?>("--limit") { Description = "Use only the first N lines of each kind (e.g. 100 to bound the run time)." };
        var maxAnswer = new Option<int>("--max-answer-tokens") { Description = "Most tokens generated per question; 0 skips question answering (perplexity only).", DefaultValueFactory = _ => 96 };
        var batch = new Option<int>("--batch") { Description = "Sequences per forward pass.", DefaultValueFactory = _ => 16 };
        var onBadLine = OnBadLine();
        var compute = new ComputeOptions();

        var command = new Command("eval", "Evaluate perplexity, question answering and cache cost of a checkpoint.")
        {
            model, data, json, baseline, limit, maxAnswer, batch, onBadLine,
        };
        compute.AddTo(command);
        command.Subcommands.Add(TradeOff());
        command.Subcommands.Add(Curve());
        command.SetAction(parse => Run(() =>
        {
            var folder = parse.GetValue(model)!;
            RequireFolder(folder, "--model");
            var baselineFolder = parse.GetValue(baseline);
            if (baselineFolder is not null)
            {
                RequireFolder(baselineFolder, "--baseline");
            }
            RequireFile(parse.GetValue(data)!, "--data");
            if (parse.GetValue(limit) is < 1 || parse.GetValue(batch) < 1)
            {
                throw new UserError("--limit and --batch must be at least 1");
            }
            if (parse.GetValue(maxAnswer) < 0)
            {
                throw new UserError("--max-answer-tokens must be 0 (no question answering) or more");
            }
            var reader = new JsonlReader(parse.GetValue(data)!, Policy(parse.GetValue(onBadLine)!));
            var examples = ValidationExample.ReadAll(reader, parse.GetValue(limit));
            ReportSkipped(reader);
            if (examples.Count == 0)
            {
                throw new UserError($"{reader.Path}: no validation lines");
            }
            var options = new EvalOptions { MaxAnswerTokens = parse.GetValue(maxAnswer), BatchSize = parse.GetValue(batch) };
            var target = compute.Initialize(parse);

            var (report, answers, lines) = Evaluate(folder, target, examples, options);
            var output = new JsonObject { ["model"] = folder, ["data"] = reader.Path, ["limit_per_kind"] = parse.GetValue(limit), ["result"] = report };
            if (baselineFolder is not null)
            {
                JsonObject? agreement = null;
                var (reference, referenceAnswers, referenceLines) = Evaluate(baselineFolder, target, examples, options, (baselineModel, tokenizer, baselineAnswers) =>
                    agreement = answers.Count == 0 ? null
                        : AnswerAgreement.Of(answers, baselineAnswers, baselineModel, Evaluator.StopIds(baselineModel, tokenizer), options.BatchSize));
                output["baseline"] = new JsonObject { ["model"] = baselineFolder, ["result"] = reference };
                output["comparison"] = EvalComparison.Compare(report, reference);
                EvalComparison.Print(Console.Out, report, reference, Path.GetFileName(folder.TrimEnd('/')), Path.GetFileName(baselineFolder.TrimEnd('/')));
                var paired = PairedComparison.Of(lines, referenceLines, answers, referenceAnswers);
                output["paired"] = paired;
                PairedComparison.Print(Console.Out, paired);
                if (agreement is not null)
                {
                    output["qa_agreement"] = agreement;
                    Console.WriteLine(AnswerAgreement.Describe(agreement));
                }
            }
            else
            {
                Console.WriteLine(Json(report));
            }
            WriteJson(parse.GetValue(json)!, output);
            Console.Error.WriteLine($"wrote {parse.GetValue(json)}");
            return 0;
        }));
        return command;
    }

    /// <summary><c>recurformer eval trade-off</c>: a table and a chart of several eval reports against the teacher's.</summary>
    private static Command TradeOff()
    {
        var teacher = new Option<string>("--teacher") { Description = "The teacher's eval JSON.", Required = true };
        var reports = new Option<string[]>("--reports") { Description = "Eval JSON files of converted models.", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out", "-o") { Description = "Folder for trade-off.md, trade-off.json and trade-off.png.", Required = true };
        var command = new Command("trade-off", "Tabulate and plot KV kept vs perplexity and exact match from eval reports.") { teacher, reports, output };
        command.SetAction(parse => Run(() =>
        {
            RequireFile(parse.GetValue(teacher)!, "--teacher");
            var points = parse.GetValue(reports)!.Select(path =>
            {
                RequireFile(path, "--reports");
                return TradeOffTable.Read(path);
            }).ToArray();
            var reference = TradeOffTable.Read(parse.GetValue(teacher)!);
            var folder = parse.GetValue(output)!;
            Directory.CreateDirectory(folder);
            var table = TradeOffTable.Markdown(reference, points);
            File.WriteAllText(Path.Combine(folder, "trade-off.md"), table);
            WriteJson(Path.Combine(folder, "trade-off.json"), System.Text.Json.JsonSerializer.SerializeToNode(new[] { reference }.Concat(points).ToArray())!);
            TradeOffTable.Plot(Path.Combine(folder, "trade-off.png"), reference, points);
            Console.Write(table);
            return 0;
        }));
        return command;
    }

    /// <summary><c>recurformer eval curve</c>: quality against training tokens, with fixed levels (e.g. the window of equal memory).</summary>
    private static Command Curve()
    {
        var teacher = new Option<string>("--teacher") { Description = "The teacher's eval JSON.", Required = true };
        var points = new Option<string[]>("--point")
        {
            Description = "A checkpoint's eval JSON as SERIES@TOKENS=PATH (tokens trained on, stage 1 + stage 2; M or k suffix), e.g. \"Mamba 50%@9.2M=eval.json\"; repeat per point.",
            Required = true, AllowMultipleArgumentsPerToken = true,
        };
        var levels = new Option<string[]>("--level") { Description = "A fixed reference as NAME=PATH, e.g. \"window w76 (equal memory)=eval.json\"; repeatable.", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out", "-o") { Description = "Folder for curve.md, curve-perplexity.png and curve-exact-match.png.", Required = true };
        var command = new Command("curve", "Plot perplexity and exact match against training tokens from eval reports, next to fixed levels.") { teacher, points, levels, output };
        command.SetAction(parse => Run(() =>
        {
            RequireFile(parse.GetValue(teacher)!, "--teacher");
            T Parsed<T>(Func<string, T> parser, string spec)
            {
                try
                {
                    return parser(spec);
                }
                catch (FormatException error)
                {
                    throw new UserError(error.Message);
                }
            }
            var curve = parse.GetValue(points)!.Select(spec =>
            {
                var (series, tokens, path) = Parsed(TrainingCurve.ParsePoint, spec);
                RequireFile(path, "--point");
                return new CurvePoint(series, tokens, TradeOffTable.Read(path));
            }).ToArray();
            var fixedLevels = (parse.GetValue(levels) ?? []).Select(spec =>
            {
                var (name, path) = Parsed(TrainingCurve.ParseLevel, spec);
                RequireFile(path, "--level");
                return new CurveLevel(name, TradeOffTable.Read(path));
            }).ToArray();
            var reference = TradeOffTable.Read(parse.GetValue(teacher)!);
            var folder = parse.GetValue(output)!;
            Directory.CreateDirectory(folder);
            var table = TrainingCurve.Markdown(reference, curve, fixedLevels);
            File.WriteAllText(Path.Combine(folder, "curve.md"), table);
            TrainingCurve.Plot(folder, reference, curve, fixedLevels);
            Console.Write(table);
            return 0;
        }));
        return command;
    }

    /// <param name="whileLoaded">Runs after the evaluation, while the model is still loaded, with its answers.</param>
    private static (JsonObject Report, IReadOnlyList<GeneratedAnswer> Answers, IReadOnlyList<LineScore> Lines) Evaluate(string folder, ComputeTarget target, IReadOnlyList<ValidationExample> examples,
        EvalOptions options, Action<ICausalLM, CheckpointTokenizer, IReadOnlyList<GeneratedAnswer>>? whileLoaded = null)
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(folder);
        using var lm = CausalLMLoader.FromPretrained(folder, target);
        var work = examples.Count + examples.Count(e => e.Kind == ValidationExample.Qa) + examples.Sum(e => e.Text.Length) / 2000 + 1;
        var evaluator = new Evaluator(lm, tokenizer, options);
        var report = evaluator.Evaluate(examples, new ProgressLine($"eval {Path.GetFileName(folder.TrimEnd('/'))}", work));
        whileLoaded?.Invoke(lm, tokenizer, evaluator.Answers);
        return (report, evaluator.Answers, evaluator.Lines);
    }
}
