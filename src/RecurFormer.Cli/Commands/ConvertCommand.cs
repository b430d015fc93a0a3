using RecurFormer.Model.Caching;
using System.CommandLine;
using System.Text.Json.Nodes;
using RecurFormer.Model;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Toolkit.Analysis;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Evaluation;
using static RecurFormer.Cli.Commands.ToolkitCommandSupport;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer convert</c>: select KV groups from a recency analysis (a threshold on the ratio, or a share of the
/// KV cache to remove) and write a RecurFormer checkpoint where they are computed by Mamba mixers or windowed.
/// </summary>
public static class ConvertCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Source checkpoint folder (a plain Transformer).", Required = true };
        var analysis = new Option<string>("--analysis") { Description = "recency.json written by 'recurformer analyze' for this model.", Required = true };
        var threshold = new Option<double?>("--threshold") { Description = "Replace every KV group whose recency ratio is at least T." };
        var reduction = new Option<double?>("--kv-reduction") { Description = "Replace the most recency-aware groups that make up this share (0..1, exclusive) of the KV cache." };
        var kind = new Option<string>("--kind") { Description = "mamba (a Mamba-1 mixer per layer, to distill), window (sinks + recent-window attention, no training) or window-mamba (both: the window plus a mixer's output, Samba-style; distill with --stage1-steps 0).", DefaultValueFactory = _ => "mamba" };
        var window = new Option<int>("--window") { Description = "Window and window-mamba kinds: recent tokens each windowed group sees (the query's own included).", DefaultValueFactory = _ => 64 };
        var sinks = new Option<int>("--sinks") { Description = "Window and window-mamba kinds: initial 'sink' tokens each windowed group keeps seeing.", DefaultValueFactory = _ => 4 };
        var rankWindow = new Option<int?>("--rank-window") { Description = "Which analysis window ranks the groups (default: window and window-mamba kinds, the analysis window closest to --window; mamba kind, the largest)." };
        var expand = new Option<int>("--expand") { Description = "Mamba and window-mamba kinds: d_inner = expand × the replaced heads' width.", DefaultValueFactory = _ => 2 };
        var stateSize = new Option<int>("--d-state") { Description = "Mamba and window-mamba kinds: SSM state size per channel.", DefaultValueFactory = _ => 16 };
        var convKernel = new Option<int>("--d-conv") { Description = "Mamba and window-mamba kinds: depthwise convolution width.", DefaultValueFactory = _ => 4 };
        var seed = new Option<long>("--seed") { Description = "Seed of the Mamba mixers' random initialisation.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out", "-o") { Description = "Output checkpoint folder.", Required = true };
        var force = Force();

        var command = new Command("convert", "Replace the most recency-aware KV groups by Mamba mixers, windowed attention, or both (window-mamba).")
        {
            model, analysis, threshold, reduction, kind, window, sinks, rankWindow, expand, stateSize, convKernel, seed, output, force,
        };
        command.SetAction(parse => Run(() =>
        {
            var folder = parse.GetValue(model)!;
            RequireFolder(folder, "--model");
            var kindValue = parse.GetValue(kind)!.ToLowerInvariant() switch
            {
                "mamba" => ReplacementKind.Mamba,
                "window" => ReplacementKind.Window,
                "window-mamba" => ReplacementKind.WindowMamba,
                var other => throw new UserError($"--kind must be mamba, window or window-mamba, not '{other}'"),
            };
            var t = parse.GetValue(threshold);
            var r = parse.GetValue(reduction);
            if ((t is null) == (r is null))
            {
                throw new UserError("give exactly one of --threshold T and --kv-reduction R");
            }
            if (r is { } share && !(share > 0 && share < 1))
            {
                throw new UserError($"--kv-reduction must be strictly between 0 and 1, not {share}");
            }
            var windowSpec = new WindowSpec(parse.GetValue(window), parse.GetValue(sinks));
            if (windowSpec.Size < 1 || windowSpec.Sinks < 0)
            {
                throw new UserError("--window must be ≥ 1 and --sinks ≥ 0");
            }
            var mambaSpec = new MambaSpec(parse.GetValue(expand), parse.GetValue(stateSize), parse.GetValue(convKernel), null);
            if (mambaSpec.Expand < 1 || mambaSpec.StateSize < 1 || mambaSpec.ConvKernel < 1)
            {
                throw new UserError("--expand, --d-state and --d-conv must be ≥ 1");
            }

            var config = ModelConfig.Load(folder) as TransformerConfig ?? throw new UserError($"{folder}: only Transformer checkpoints can be converted");
            var analysisPath = parse.GetValue(analysis)!;
            var report = RecencyReport.Load(analysisPath);
            GroupSelection.CheckMatches(report, config, analysisPath, folder);
            var ranking = parse.GetValue(rankWindow) ?? (kindValue != ReplacementKind.Mamba
                ? report.Windows.OrderBy(w => Math.Abs(w - windowSpec.Size)).First()
                : report.Windows.Max());
            var ranked = GroupSelection.Rank(report, ranking);
            var selected = t is { } value ? GroupSelection.ByThreshold(ranked, value) : GroupSelection.ByReduction(ranked, r!.Value);
            var criterion = t is not null ? $"--threshold {t}" : $"--kv-reduction {r}";
            if (selected.Count == 0)
            {
                throw new UserError($"{criterion} selects no KV group (the highest ratio at w={ranking} is {ranked[0].Ratio:F3}): nothing to convert");
            }
            if (selected.Count == ranked.Count)
            {
                throw new UserError($"{criterion} selects all {ranked.Count} KV groups (the lowest ratio at w={ranking} is {ranked[^1].Ratio:F3}): no attention would be left");
            }

            var outFolder = parse.GetValue(output)!;
            CheckpointFolder.Prepare(outFolder, parse.GetValue(force));
            var summary = new JsonObject
            {
                ["file"] = Path.GetFileName(analysisPath),
                ["rank_window"] = ranking,
                ["criterion"] = criterion,
                ["selected"] = new JsonArray(selected.Select(c => (JsonNode)new JsonArray(c.Layer, c.Group, Math.Round(c.Ratio, 4))).ToArray()),
                ["groups_replaced"] = selected.Count,
                ["groups_total"] = ranked.Count,
            };
            TorchRuntime.EnsureLoaded();
            var plan = new ConversionPlan(kindValue, selected, windowSpec, mambaSpec, parse.GetValue(seed), summary);
            var layout = Converter.Convert(folder, plan, outFolder);
            var cost = CacheReport.Of(new CacheLayout(config with { Hybrid = layout }, TorchSharp.torch.ScalarType.Float32));
            var result = new JsonObject
            {
                ["out"] = outFolder,
                ["kind"] = parse.GetValue(kind)!.ToLowerInvariant(),
                ["analysis"] = summary,
                ["cache_float32"] = cost,
            };
            Console.WriteLine(Json(result));
            return 0;
        }));
        return command;
    }
}
