using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Analysis;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Reporting;
using static RecurFormer.Cli.Commands.ToolkitCommandSupport;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer analyze</c>: recency ratios per layer × head and per KV group of a Transformer, measured on
/// calibration text with explicit attention probabilities. Writes recency.json, one heatmap PNG per window, and
/// prints a table of the KV groups.
/// </summary>
public static class AnalyzeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Source checkpoint folder (a plain Transformer).", Required = true };
        var data = new Option<string>("--data") { Description = "Calibration text: a .jsonl or .jsonl.xz file with a \"text\" field per line.", Required = true };
        var windows = new Option<string>("--windows") { Description = "Recency windows (tokens), comma-separated.", DefaultValueFactory = _ => "4,16,64" };
        var samples = new Option<int>("--samples") { Description = "Number of calibration sequences.", DefaultValueFactory = _ => 16 };
        var length = new Option<int>("--length") { Description = "Tokens per calibration sequence.", DefaultValueFactory = _ => 512 };
        var warmup = new Option<int>("--warmup") { Description = "Query positions before this are left out of the averages.", DefaultValueFactory = _ => 64 };
        var compare = new Option<string?>("--compare") { Description = "A training-report.json with ratio_by_layer_head_window to compare with (prints the differences)." };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (recency.json, recency-wN.png).", Required = true };
        var force = Force();
        var onBadLine = OnBadLine();
        var compute = new ComputeOptions();

        var command = new Command("analyze", "Measure how recency-aware each attention head and KV group is.")
        {
            model, data, windows, samples, length, warmup, compare, output, force, onBadLine,
        };
        compute.AddTo(command);
        command.SetAction(parse => Run(() =>
        {
            var folder = parse.GetValue(model)!;
            RequireFolder(folder, "--model");
            RequireFile(parse.GetValue(data)!, "--data");
            var windowList = IntList(parse.GetValue(windows)!, "--windows");
            var sampleCount = parse.GetValue(samples);
            var sequenceLength = parse.GetValue(length);
            var warmupCount = parse.GetValue(warmup);
            if (sampleCount < 1 || sequenceLength < 2 || warmupCount < 0 || warmupCount >= sequenceLength)
            {
                throw new UserError("--samples must be ≥ 1, --length ≥ 2 and 0 ≤ --warmup < --length");
            }
            var outFolder = parse.GetValue(output)!;
            CheckpointFolder.Prepare(outFolder, parse.GetValue(force));

            var tokenizer = CheckpointTokenizer.FromPretrained(folder);
            var reader = new JsonlReader(parse.GetValue(data)!, Policy(parse.GetValue(onBadLine)!));
            var sequences = CalibrationText.Windows(reader.ReadTexts().Select(t => t.Text), tokenizer, sequenceLength, sampleCount);
            ReportSkipped(reader);

            var target = compute.Initialize(parse);
            using var lm = CausalLMLoader.FromPretrained(folder, target);
            var analyzer = new RecencyAnalyzer(lm, new RecencyOptions(windowList, warmupCount, sequenceLength, sampleCount));
            var report = analyzer.Analyze(sequences, Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/')), new ProgressLine("analyze", sequences.Count));

            var jsonPath = Path.Combine(outFolder, "recency.json");
            report.Save(jsonPath);
            foreach (var (window, index) in report.Windows.Select((w, i) => (w, i)))
            {
                var grid = new double[report.Layers, report.Heads];
                for (var l = 0; l < report.Layers; l++)
                {
                    for (var h = 0; h < report.Heads; h++)
                    {
                        grid[l, h] = report.ByLayerHeadWindow[l][h][index];
                    }
                }
                Charts.Heatmap(Path.Combine(outFolder, $"recency-w{window}.png"), grid, $"Recency ratio, last {window} keys", "layer", "query head");
            }
            PrintTable(report);
            if (parse.GetValue(compare) is { } referencePath)
            {
                var comparison = RecencyComparison.Compare(report, referencePath);
                WriteJson(Path.Combine(outFolder, "comparison.json"), comparison);
                Console.WriteLine(Json(comparison));
            }
            Console.WriteLine($"wrote {jsonPath}");
            return 0;
        }));
        return command;
    }

    private static void PrintTable(RecencyReport report)
    {
        Console.WriteLine($"recency ratio per KV group (mean of its {report.GroupSize} query heads), positions ≥ {report.Warmup} of {report.Samples} × {report.SequenceLength} tokens");
        Console.WriteLine("layer group " + string.Join(" ", report.Windows.Select(w => $"w={w,-5}")));
        for (var l = 0; l < report.Layers; l++)
        {
            for (var g = 0; g < report.KvGroups; g++)
            {
                Console.WriteLine($"{l,5} {g,5} " + string.Join(" ", report.ByLayerGroupWindow[l][g].Select(v => v.ToString("F3", CultureInfo.InvariantCulture).PadRight(7))));
            }
        }
    }
}

/// <summary>How close an analysis is to a reference (e.g. the teacher's training-report.json, measured with HuggingFace).</summary>
internal static class RecencyComparison
{
    public static JsonObject Compare(RecencyReport report, string referencePath)
    {
        RequireFile(referencePath, "--compare");
        var root = JsonNode.Parse(File.ReadAllText(referencePath)) as JsonObject;
        var windows = root?["windows"]?.AsArray().Select(n => n!.GetValue<int>()).ToArray();
        var ratios = root?["ratio_by_layer_head_window"]?.AsArray();
        if (windows is null || ratios is null || ratios.Count != report.Layers)
        {
            throw new UserError($"--compare {referencePath}: no ratio_by_layer_head_window for {report.Layers} layers");
        }
        var result = new JsonObject { ["reference"] = referencePath };
        foreach (var window in windows.Intersect(report.Windows))
        {
            var r = Array.IndexOf(windows, window);
            var ours = report.WindowIndex(window);
            var pairs = new List<(double Ours, double Theirs)>();
            for (var l = 0; l < report.Layers; l++)
            {
                for (var h = 0; h < report.Heads; h++)
                {
                    pairs.Add((report.ByLayerHeadWindow[l][h][ours], ratios[l]![h]![r]!.GetValue<double>()));
                }
            }
            var differences = pairs.Select(p => Math.Abs(p.Ours - p.Theirs)).ToArray();
            result[$"w{window}"] = new JsonObject
            {
                ["max_abs_difference"] = differences.Max(),
                ["mean_abs_difference"] = differences.Average(),
                ["pearson"] = Pearson(pairs),
                ["top_half_overlap"] = TopOverlap(pairs, pairs.Count / 2),
            };
        }
        return result;
    }

    private static double Pearson(List<(double A, double B)> pairs)
    {
        var ma = pairs.Average(p => p.A);
        var mb = pairs.Average(p => p.B);
        var cov = pairs.Sum(p => (p.A - ma) * (p.B - mb));
        var va = Math.Sqrt(pairs.Sum(p => (p.A - ma) * (p.A - ma)));
        var vb = Math.Sqrt(pairs.Sum(p => (p.B - mb) * (p.B - mb)));
        return cov / (va * vb);
    }

    /// <summary>Share of the reference's top-k heads that are also in ours.</summary>
    private static double TopOverlap(List<(double A, double B)> pairs, int k)
    {
        var ours = pairs.Select((p, i) => (p.A, i)).OrderByDescending(x => x.A).Take(k).Select(x => x.i).ToHashSet();
        var theirs = pairs.Select((p, i) => (p.B, i)).OrderByDescending(x => x.B).Take(k).Select(x => x.i);
        return (double)theirs.Count(ours.Contains) / k;
    }
}
