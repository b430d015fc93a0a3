using RecurFormer.Engine.Requests;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>Continuous batching must not change what any request generates.</summary>
public sealed class BatchingTests
{
    private static readonly string[] Questions =
    [
        "Explain System.Threading.CancellationToken.Equals.",
        "What is System.Text.Json.JsonSerializer for?",
        "Describe the method System.Uri.IsHexEncoding.",
        "What does the method System.String.Trim do?",
        "Explain Microsoft.AspNetCore.Cors.Infrastructure.CorsPolicy.Headers.",
    ];

    private static async Task<List<int>[]> GenerateAlone(IReadOnlyList<int[]> prompts, int maxTokens)
    {
        using var engine = Start(DemoTeacher);
        var results = new List<int>[prompts.Count];
        for (var i = 0; i < prompts.Count; i++)
        {
            results[i] = (await Collect(engine.Submit(Request($"alone-{i}", prompts[i], Greedy(maxTokens) with { IgnoreEos = true })))).Tokens[0];
        }
        return results;
    }

    private static int[][] MixedPrompts()
    {
        // Mixed lengths: chat prompts, a long doc prompt made of several, and a one-token prompt.
        var prompts = Questions.Select(q => Tokenizer.Encode(ChatPrompt(q))).ToList();
        prompts.Add(Tokenizer.Encode(string.Join("\n", Questions) + "\nSystem.Text.Json.JsonSerializer.Deserialize"));
        prompts.Add([Tokenizer.GetTokenId("<|im_start|>")]);
        return [.. prompts];
    }

    [Theory]
    [InlineData(512, 512L << 20)]   // everything fits, prompts prefilled whole
    [InlineData(24, 512L << 20)]    // chunked prefill: prompts cut into 24-token chunks
    public async Task Greedy_outputs_in_a_batch_equal_each_request_alone(int maxBatchedTokens, long cacheBytes)
    {
        var prompts = MixedPrompts();
        var alone = await GenerateAlone(prompts, 20);

        using var engine = Start(DemoTeacher, new EngineOptions { MaxNumBatchedTokens = maxBatchedTokens, CacheMemoryBytes = cacheBytes });
        var together = await Task.WhenAll(prompts.Select((p, i) => Collect(engine.Submit(Request($"batch-{i}", p, Greedy(20) with { IgnoreEos = true })))));

        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(alone[i], together[i].Tokens[0]);
        }
    }

    [Fact]
    public async Task Preempted_requests_continue_transparently_with_the_same_tokens()
    {
        var prompts = MixedPrompts()[..5];
        var alone = await GenerateAlone(prompts, 40);

        // Room for about three sequences: decoding runs out of blocks, the newest are preempted and recomputed.
        var blockBytes = 2L * 8 * 4 * 16 * 48 * 4;
        using var engine = Start(DemoTeacher, new EngineOptions { CacheMemoryBytes = blockBytes * 16, BlockSize = 16, KvCacheDType = "float32" });
        var together = await Task.WhenAll(prompts.Select((p, i) => Collect(engine.Submit(Request($"preempt-{i}", p, Greedy(40) with { IgnoreEos = true })))));

        Assert.True(engine.Stats.Preemptions > 0, "the budget was chosen to force preemption");
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Null(together[i].Error);
            Assert.Equal(alone[i], together[i].Tokens[0]);
        }
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible_whatever_else_runs()
    {
        var prompt = Tokenizer.Encode(ChatPrompt(Questions[0]));
        var sampling = new SamplingParams { Temperature = 1.0, TopP = 0.9, TopK = 50, Seed = 1234, MaxTokens = 24, IgnoreEos = true };

        using var engine = Start(DemoTeacher);
        var alone = await Collect(engine.Submit(Request("seeded-alone", prompt, sampling)));
        var noise = Enumerable.Range(0, 4).Select(i => Collect(engine.Submit(Request($"noise-{i}", Tokenizer.Encode(ChatPrompt(Questions[i + 1])),
            new SamplingParams { Temperature = 1.2, MaxTokens = 30, Seed = i, IgnoreEos = true })))).ToList();
        var crowded = await Collect(engine.Submit(Request("seeded-crowded", prompt, sampling)));
        await Task.WhenAll(noise);

        Assert.Equal(alone.Tokens[0], crowded.Tokens[0]);
        var other = await Collect(engine.Submit(Request("seeded-other", prompt, sampling with { Seed = 99 })));
        Assert.NotEqual(alone.Tokens[0], other.Tokens[0]);
    }

    [Fact]
    public async Task The_teacher_answers_the_reference_question_and_stops_at_im_end()
    {
        using var engine = Start(DemoTeacher);
        var result = await Collect(engine.Submit(Request("reference", Tokenizer.Encode(ChatPrompt(Questions[0])), Greedy(100))));

        Assert.Equal(FinishReason.Stop, result.Reasons[0]);
        Assert.Equal("Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object. It returns true if the specified object is equal to the current instance; otherwise, false.", result.TextOf());
        Assert.Equal(result.Tokens[0].Count + 1, result.Usage!.CompletionTokens); // the eos token counts, its text does not
    }

    [Fact]
    public async Task N_choices_share_the_prefill_and_greedy_choices_agree()
    {
        using var engine = Start(DemoTeacher);
        var prompt = Tokenizer.Encode(ChatPrompt(Questions[1]));
        var greedy = await Collect(engine.Submit(Request("n3", prompt, Greedy(16) with { N = 3, IgnoreEos = true })), n: 3);
        Assert.Equal(greedy.Tokens[0], greedy.Tokens[1]);
        Assert.Equal(greedy.Tokens[0], greedy.Tokens[2]);
        Assert.Equal(prompt.Length, greedy.Usage!.PromptTokens);
        Assert.Equal(48, greedy.Usage.CompletionTokens);

        var sampled = await Collect(engine.Submit(Request("n3-sampled", prompt, new SamplingParams { Temperature = 1.5, N = 3, Seed = 7, MaxTokens = 16, IgnoreEos = true })), n: 3);
        Assert.All(sampled.Reasons, r => Assert.Equal(FinishReason.Length, r));
        Assert.True(sampled.Tokens.Select(t => string.Join(",", t)).Distinct().Count() > 1, "different seeds per choice give different samples");
    }
}
