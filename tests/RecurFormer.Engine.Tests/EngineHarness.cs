using System.Text;
using RecurFormer.Engine.Requests;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;

namespace RecurFormer.Engine.Tests;

/// <summary>The demo teacher and helpers to run requests through an engine to completion.</summary>
public static class EngineHarness
{
    public static string RepositoryRoot { get; } = FindRoot();
    public static string DemoTeacher => Path.Combine(RepositoryRoot, "models", "dotnet-docs-qwen2-16m");
    public static string Fixture(string name) => Path.Combine(RepositoryRoot, "tests", "fixtures", name);

    private static readonly Lazy<CheckpointTokenizer> LazyTokenizer = new(() => CheckpointTokenizer.FromPretrained(DemoTeacher));
    public static CheckpointTokenizer Tokenizer => LazyTokenizer.Value;

    public const string SystemMessage = "You are a concise assistant that explains .NET APIs.";

    public static string ChatPrompt(string question) =>
        $"<|im_start|>system\n{SystemMessage}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n";

    /// <summary>An engine over a checkpoint, in float32 unless told otherwise: these tests pin exact outputs.</summary>
    public static LLMEngine Start(string folder, EngineOptions? options = null, bool tokenizer = true, string dtype = "float32")
    {
        var model = CausalLMLoader.FromPretrained(folder, TorchRuntime.Initialize(new TorchOptions { DType = dtype }));
        return new LLMEngine(model, tokenizer ? CheckpointTokenizer.FromPretrained(folder) : null, options ?? new EngineOptions { CacheMemoryBytes = 64L << 20 });
    }

    /// <summary>Everything a request produced, per choice.</summary>
    public sealed record Result(List<int>[] Tokens, StringBuilder[] Text, FinishReason?[] Reasons, Usage? Usage, string? Error, List<EngineEvent> Events)
    {
        public string TextOf(int choice = 0) => Text[choice].ToString();
    }

    public static async Task<Result> Collect(System.Threading.Channels.ChannelReader<EngineEvent> events, int n = 1)
    {
        var result = new Result(
            Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray(),
            Enumerable.Range(0, n).Select(_ => new StringBuilder()).ToArray(),
            new FinishReason?[n], null, null, []);
        Usage? usage = null;
        string? error = null;
        await foreach (var e in events.ReadAllAsync())
        {
            result.Events.Add(e);
            switch (e)
            {
                case TokenEvent token:
                    result.Tokens[token.Choice].Add(token.TokenId);
                    result.Text[token.Choice].Append(token.Text);
                    break;
                case FinishedEvent finished:
                    result.Text[finished.Choice].Append(finished.Text);
                    result.Reasons[finished.Choice] = finished.Reason;
                    usage = finished.Usage;
                    break;
                case ErrorEvent failed:
                    error = failed.Message;
                    break;
            }
        }
        return result with { Usage = usage, Error = error };
    }

    public static GenerationRequest Request(string id, IReadOnlyList<int> prompt, SamplingParams sampling) => new(id, prompt, sampling);

    public static SamplingParams Greedy(int maxTokens = 24) => new() { Temperature = 0, MaxTokens = maxTokens };

    /// <summary>Waits until the engine thread has published an idle snapshot (the step loop runs asynchronously).</summary>
    public static Task<EngineStats> WaitIdle(LLMEngine engine) =>
        WaitFor(engine, stats => stats.Running == 0 && stats.Waiting == 0 && stats.Cache.Sequences == 0);

    /// <summary>The first published snapshot that satisfies <paramref name="condition"/> (or the last one after 5 s).</summary>
    public static async Task<EngineStats> WaitFor(LLMEngine engine, Func<EngineStats, bool> condition)
    {
        for (var i = 0; i < 200; i++)
        {
            var stats = engine.Stats;
            if (condition(stats))
            {
                return stats;
            }
            await Task.Delay(25);
        }
        return engine.Stats;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RecurFormer.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("RecurFormer.sln not found");
    }
}
