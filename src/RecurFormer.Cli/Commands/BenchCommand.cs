using System.CommandLine;
using RecurFormer.Cli.Benchmarking;
using RecurFormer.Engine;
using RecurFormer.Model.Caching;
using RecurFormer.Model.CausalLM;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer bench</c>: the engine benchmark. Throughput, time to first token and inter-token latency at
/// several concurrencies and prompt lengths, and how many long sequences fit a fixed cache budget, for a model
/// and (optionally) its baseline, side by side in one run. Prints a table and writes JSON.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Checkpoint to benchmark.", DefaultValueFactory = _ => GenerateCommand.DefaultModel };
        var baseline = new Option<string?>("--baseline") { Description = "Checkpoint to compare with (e.g. the source Transformer)." };
        var json = new Option<string>("--json") { Description = "Where to write the JSON report.", Required = true };
        var concurrency = new Option<string>("--concurrency") { Description = "Comma-separated concurrencies.", DefaultValueFactory = _ => "1,4,16,64" };
        var promptTokens = new Option<string>("--prompt-tokens") { Description = "Comma-separated prompt lengths.", DefaultValueFactory = _ => "128,1024" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens generated per request (eos ignored).", DefaultValueFactory = _ => 64 };
        var cacheMemory = new Option<string>("--cache-memory") { Description = "Cache budget of the engine during the runs.", DefaultValueFactory = _ => "1GB" };
        var kvDType = new Option<string>("--kv-cache-dtype") { Description = "KV cache dtype: auto (16-bit), float32, bfloat16 or float16.", DefaultValueFactory = _ => "auto" };
        var maxBatched = new Option<int>("--max-num-batched-tokens") { Description = "Token budget per engine step.", DefaultValueFactory = _ => 512 };
        var capacityBudget = new Option<string>("--capacity-budget") { Description = "Cache budget for the capacity figure.", DefaultValueFactory = _ => "64MB" };
        var soak = new Option<int>("--soak-requests") { Description = "After the grid, this many more requests (after 100 of warm-up) with the first model, reporting resident memory every 100 (0: none).", DefaultValueFactory = _ => 0 };
        var capacityTokens = new Option<int>("--capacity-tokens") { Description = "Sequence length for the capacity figure.", DefaultValueFactory = _ => 2048 };
        var scenario = new Option<string>("--scenario") { Description = "grid (concurrency × prompt length) or conversations (16 chats × 8 turns re-sending their history, prefix caching off and on).", DefaultValueFactory = _ => "grid" };
        scenario.AcceptOnlyFromAmong("grid", "conversations");
        var noPrefixCaching = new Option<bool>("--no-prefix-caching") { Description = "Grid: run the engine with prefix caching off (the grid's prompts never share a prefix either way)." };
        var compute = new ComputeOptions();

        var command = new Command("bench", "Benchmark the engine: throughput, latency and cache capacity, model vs baseline.")
        {
            model, baseline, json, concurrency, promptTokens, maxTokens, cacheMemory, kvDType, maxBatched, capacityBudget, capacityTokens, soak, scenario, noPrefixCaching,
        };
        compute.AddTo(command);
        command.SetAction(async (parse, cancellation) =>
        {
            var concurrencies = ParseList(parse.GetValue(concurrency)!, "--concurrency");
            var lengths = ParseList(parse.GetValue(promptTokens)!, "--prompt-tokens");
            var generate = parse.GetValue(maxTokens);
            var budget = ParseBytes(parse.GetValue(capacityBudget)!, "--capacity-budget");
            var target = compute.Initialize(parse);
            var folders = new[] { parse.GetValue(model)!, parse.GetValue(baseline) }.OfType<string>().ToArray();
            if (parse.GetValue(scenario) == "conversations")
            {
                return await RunConversations(folders, target, ParseBytes(parse.GetValue(cacheMemory)!, "--cache-memory"), parse.GetValue(kvDType)!, parse.GetValue(maxBatched), parse.GetValue(json)!);
            }

            // Both engines at once, measured cell by cell in turn (BenchmarkRunner): the model and its baseline see the
            // same machine, whatever else runs on it meanwhile.
            var models = new List<ICausalLM>();
            var engines = new List<LLMEngine>();
            var subjects = new List<BenchmarkRunner.Subject>();
            try
            {
                foreach (var folder in folders)
                {
                    var options = new EngineOptions
                    {
                        CacheMemoryBytes = ParseBytes(parse.GetValue(cacheMemory)!, "--cache-memory"),
                        KvCacheDType = parse.GetValue(kvDType)!,
                        MaxNumBatchedTokens = parse.GetValue(maxBatched),
                        MaxNumSeqs = Math.Max(64, concurrencies.Max()),
                        MaxWaitingRequests = Math.Max(256, concurrencies.Max()),
                        MaxModelLen = Math.Max(lengths.Max(), MemorySoak.LongestPrompt) + Math.Max(generate, MemorySoak.NewTokens) + 16,
                        EnablePrefixCaching = !parse.GetValue(noPrefixCaching),
                    };
                    var lm = CausalLMLoader.FromPretrained(folder, target);
                    models.Add(lm);
                    var tokenizer = GenerateCommand.LoadTokenizerIfPresent(folder);
                    var engine = new LLMEngine(lm, tokenizer, options);
                    engines.Add(engine);
                    subjects.Add(new(new EngineBenchTarget(folder, engine), new BenchPrompts(tokenizer, lm.Config.VocabSize).Make));
                }
                var runs = await BenchmarkRunner.Run(subjects, concurrencies, lengths, generate, Console.Error);
                SoakResult? soakResult = null;
                if (parse.GetValue(soak) is > 0 and var soakRequests)
                {
                    soakResult = await MemorySoak.Run(subjects[0].Target, subjects[0].Prompt, soakRequests, 100, () => engines[0].Stats.LiveTensors, Console.Error);
                }
                var layouts = engines.Select(e => e.Layout).ToList();
                var capacityLength = parse.GetValue(capacityTokens);
                var capacity = new CapacityResult(budget, capacityLength,
                    Fit(layouts[0], budget, capacityLength), layouts.Count > 1 ? Fit(layouts[1], budget, capacityLength) : null,
                    layouts[0].SequenceBytes(capacityLength), layouts.Count > 1 ? layouts[1].SequenceBytes(capacityLength) : null);
                var report = new BenchmarkReport("engine", target.ToString(), runs, capacity) { Soak = soakResult };
                report.PrintTable(Console.Out);
                report.WriteJson(parse.GetValue(json)!);
                return 0;
            }
            finally
            {
                foreach (var engine in engines)
                {
                    try
                    {
                        await engine.StopAsync(TimeSpan.Zero);
                    }
                    finally
                    {
                        engine.Dispose();
                    }
                }
                foreach (var lm in models)
                {
                    lm.Dispose();
                }
            }
        });
        return command;
    }

    /// <summary>The conversation scenario for each model, prefix caching off then on, one engine each.</summary>
    private static async Task<int> RunConversations(string[] folders, RecurFormer.Model.Runtime.ComputeTarget target, long cacheBytes, string kvDType, int maxBatched, string json)
    {
        var shape = new ConversationBench.Shape();
        var runs = new List<ConversationRun>();
        foreach (var folder in folders)
        {
            using var lm = CausalLMLoader.FromPretrained(folder, target);
            var tokenizer = GenerateCommand.LoadTokenizerIfPresent(folder);
            var prompts = new BenchPrompts(tokenizer, lm.Config.VocabSize);
            foreach (var caching in new[] { false, true })
            {
                using var engine = new LLMEngine(lm, tokenizer, new EngineOptions
                {
                    CacheMemoryBytes = cacheBytes,
                    KvCacheDType = kvDType,
                    MaxNumBatchedTokens = maxBatched,
                    MaxNumSeqs = 64,
                    MaxModelLen = shape.LastPromptTokens + shape.AnswerTokens + 16,
                    EnablePrefixCaching = caching,
                });
                var benchTarget = new EngineBenchTarget(folder, engine);
                await benchTarget.Run(prompts.Make(16, 0), 4, CancellationToken.None); // warm-up
                runs.Add(await ConversationBench.Run(benchTarget, caching, prompts.Make, shape,
                    () => (engine.Stats.Cache.Prefix.HitTokens, engine.Stats.Cache.Prefix.QueriedTokens), Console.Error));
                await engine.StopAsync(TimeSpan.Zero);
            }
        }
        ConversationBench.PrintTable(runs, Console.Out);
        BenchmarkReport.WriteJson(json, new { mode = "conversations", device = target.ToString(), shape, runs });
        return 0;
    }

    /// <summary>Sequences of <paramref name="tokens"/> that fit <paramref name="budget"/> bytes, block rounding included.</summary>
    public static long Fit(CacheLayout layout, long budget, int tokens) => budget / layout.SequenceBytes(tokens);

    public static int[] ParseList(string text, string option)
    {
        var values = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(v => int.TryParse(v, out var n) && n > 0 ? n : throw new UserError($"{option}: '{v}' is not a positive integer"))
            .ToArray();
        return values.Length > 0 ? values : throw new UserError($"{option} is empty");
    }

    public static long ParseBytes(string text, string option)
    {
        try
        {
            return EngineOptions.ParseBytes(text);
        }
        catch (FormatException error)
        {
            throw new UserError($"{option}: {error.Message}");
        }
    }
}
