using RecurFormer.Engine.Requests;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>
/// Prefix caching must be invisible in the output: a request served from cached blocks (and, for the window and
/// RecurFormer models, restored ring and Mamba snapshots) gives the tokens and log-probabilities of the same request
/// served cold, by an engine with caching off. float32 compute and KV, as every exactness test (with a 16-bit KV
/// cache, a prefill attends to its own chunk's keys before they are rounded, so any chunking moves the last digits).
/// </summary>
public sealed class PrefixCachingTests
{
    public static TheoryData<string> Models => new()
    {
        "dotnet-docs-qwen2-16m",
        "dotnet-docs-window-16m",
        "dotnet-docs-recurformer-16m",
    };

    private static string Model(string name) => Path.Combine(RepositoryRoot, "models", name);

    /// <summary>
    /// A 300-token prompt: a system prompt and the first sentences shared by every variant (about a hundred tokens),
    /// then sentences of its own. Snapshot points at 256 and, while generating, at 304.
    /// </summary>
    private static List<int> LongPrompt(int variant)
    {
        var text = string.Join(" ", Enumerable.Range(0, 40).Select(i =>
            $"System.Collections.Generic.List<T>.Add adds item {(i < 4 ? i : i + 1000 * variant)} to the end of the list."));
        var tokens = Tokenizer.Encode(ChatPrompt(text)).ToList();
        return tokens.Count >= 300 ? tokens[..300] : throw new InvalidOperationException("the prompt text is too short");
    }

    private static SamplingParams Sampling => new() { Temperature = 0, MaxTokens = 8, IgnoreEos = true, Logprobs = true, TopLogprobs = 3 };

    private static async Task<EngineHarness.Result> Run(LLMEngine engine, string id, IReadOnlyList<int> prompt) =>
        await Collect(engine.Submit(Request(id, prompt, Sampling)));

    private static void AssertSame(EngineHarness.Result cold, EngineHarness.Result warm)
    {
        Assert.Null(warm.Error);
        Assert.Equal(cold.Tokens[0], warm.Tokens[0]);
        var coldLogprobs = cold.Events.OfType<TokenEvent>().Select(t => t.Logprob!).ToList();
        var warmLogprobs = warm.Events.OfType<TokenEvent>().Select(t => t.Logprob!).ToList();
        foreach (var (c, w) in coldLogprobs.Zip(warmLogprobs))
        {
            AssertClose(c.Logprob, w.Logprob);
            Assert.Equal(c.Top.Select(t => t.TokenId), w.Top.Select(t => t.TokenId));
            foreach (var (ct, wt) in c.Top.Zip(w.Top))
            {
                AssertClose(ct.Logprob, wt.Logprob);
            }
        }
    }

    /// <summary>
    /// Within 2e-5, relative for log-probabilities below -1: a prefill of the tail alone and of the whole prompt run
    /// matrix products of different shapes, whose float32 sums round differently in the last digits. Measured over the
    /// 512 log-probabilities of the eviction test: up to 4.9e-6 for the teacher, 7.7e-6 for the window model, 1.2e-5
    /// for the RecurFormer model (d_conv 1; 4.1e-6 for the d_conv 2 model before it). A snapshot restored wrong moves
    /// them by orders of magnitude more.
    /// </summary>
    private static void AssertClose(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= 2e-5 * Math.Max(1, Math.Abs(expected)), $"{actual} is not within 2e-5 of {expected}");

    [Theory]
    [MemberData(nameof(Models))]
    public async Task NextTurnAndPrefixEndingInsideABlock_MatchTheColdResult(string name)
    {
        using var warm = Start(Model(name), new EngineOptions { CacheMemoryBytes = 64L << 20, KvCacheDType = "float32" });
        using var cold = Start(Model(name), new EngineOptions { CacheMemoryBytes = 64L << 20, KvCacheDType = "float32", EnablePrefixCaching = false });
        var first = LongPrompt(0);
        var firstResult = await Run(warm, "turn-1", first);

        // The next turn: the whole first exchange and a new user message (a prompt that ends inside a block).
        List<int> next = [.. first, .. firstResult.Tokens[0], .. Tokenizer.Encode("<|im_end|>\n<|im_start|>user\nAnd Insert?<|im_end|>\n<|im_start|>assistant\n")];
        Assert.NotEqual(0, next.Count % 16);
        // Another request that shares the first 270 tokens (a prefix that ends inside a block), then differs.
        List<int> branch = [.. first.Take(270), .. LongPrompt(1).TakeLast(29)];

        foreach (var (id, prompt) in new[] { ("next", next), ("branch", branch) })
        {
            var before = warm.Stats.Cache.Prefix.HitTokens;
            var served = await Run(warm, id, prompt);
            Assert.True(warm.Stats.Cache.Prefix.HitTokens >= before + 256, $"{id}: no prefix hit ({warm.Stats.Cache.Prefix.HitTokens - before} tokens)");
            AssertSame(await Run(cold, id, prompt), served);
        }
        Assert.Equal(0, cold.Stats.Cache.Prefix.HitTokens);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public async Task EvictionsInTheMiddleOfARun_ChangeNothing(string name)
    {
        // Room for about three 300-token sequences: eight concurrent prompts, twice, evict cached prefixes while others run.
        var layout = new RecurFormer.Model.Caching.CacheLayout(RecurFormer.Model.Configuration.ModelConfig.Load(Model(name)), TorchSharp.torch.ScalarType.Float32);
        var budget = 3 * layout.SequenceBytes(320);
        using var warm = Start(Model(name), new EngineOptions { CacheMemoryBytes = budget, MaxNumSeqs = 4, KvCacheDType = "float32" });
        using var cold = Start(Model(name), new EngineOptions { CacheMemoryBytes = budget, MaxNumSeqs = 4, KvCacheDType = "float32", EnablePrefixCaching = false });
        var prompts = Enumerable.Range(0, 8).Select(LongPrompt).ToList();
        var expected = await Task.WhenAll(prompts.Select((p, i) => Run(cold, $"cold-{i}", p)));
        for (var round = 0; round < 2; round++)
        {
            var order = round == 0 ? prompts : Enumerable.Reverse(prompts).ToList();
            var served = await Task.WhenAll(order.Select((p, i) => Run(warm, $"warm-{round}-{i}", p)));
            for (var i = 0; i < order.Count; i++)
            {
                AssertSame(expected[prompts.IndexOf(order[i])], served[i]);
            }
        }
        var stats = await WaitIdle(warm);
        Assert.True(stats.Cache.Prefix.HitTokens > 0, "the shared system prompt never hit");
        Assert.True(stats.Cache.Prefix.EvictedBlocks > 0, "the budget never forced an eviction");
        Assert.Equal(0, stats.Cache.TotalBytes);
    }
}
