using RecurFormer.Engine.Requests;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>Cancellation, failures and bad requests never leak memory or disturb other requests.</summary>
public sealed class RobustnessTests
{
    [Fact]
    public async Task After_200_requests_some_cancelled_midway_no_memory_or_tensor_is_left()
    {
        using var engine = Start(DemoTeacher, new EngineOptions { CacheMemoryBytes = 8L << 20, MaxNumSeqs = 16, MaxWaitingRequests = 512 });
        var prompts = new[] { "What is System.Text.Json.JsonSerializer for?", "Explain System.Threading.CancellationToken.Equals.", "Describe System.Uri." }
            .Select(q => Tokenizer.Encode(ChatPrompt(q))).ToArray();
        // One request first: the model keeps RoPE tables that it builds on first use (kept, not leaked).
        await Collect(engine.Submit(Request("warm-up", prompts[0], Greedy(4))));
        var baseline = (await WaitIdle(engine)).LiveTensors;

        var tasks = Enumerable.Range(0, 200).Select(async i =>
        {
            using var cancel = new CancellationTokenSource();
            var events = engine.Submit(Request($"r{i}", prompts[i % 3], new SamplingParams { Temperature = i % 2, Seed = i, MaxTokens = 8 + i % 13, IgnoreEos = i % 5 == 0 }), cancel.Token);
            var tokens = 0;
            await foreach (var e in events.ReadAllAsync())
            {
                if (e is TokenEvent && ++tokens == 3 && i % 3 == 0)
                {
                    cancel.Cancel(); // a third of them hang up after three tokens
                }
            }
            return tokens;
        });
        var counts = await Task.WhenAll(tasks);

        Assert.All(counts, c => Assert.True(c >= 1));
        var idle = await WaitIdle(engine);
        Assert.Equal(0, idle.Running);
        Assert.Equal(0, idle.Waiting);
        Assert.Equal(0, idle.Cache.TotalBytes);
        Assert.Equal(0, idle.Cache.BlocksInUse);
        Assert.Equal(baseline, idle.LiveTensors);
    }

    [Fact]
    public async Task A_request_that_fails_leaves_the_others_outputs_unchanged()
    {
        var prompts = new[] { "What is System.Text.Json.JsonSerializer for?", "Explain System.Threading.CancellationToken.Equals.", "Describe System.Uri." }
            .Select(q => Tokenizer.Encode(ChatPrompt(q))).ToArray();
        using var engine = Start(DemoTeacher);
        var expected = await Task.WhenAll(prompts.Select((p, i) => Collect(engine.Submit(Request($"ok-{i}", p, Greedy(16))))));

        engine.FailWhen = id => id == "doomed";
        var doomed = Collect(engine.Submit(Request("doomed", prompts[0], Greedy(16))));
        var others = await Task.WhenAll(prompts.Select((p, i) => Collect(engine.Submit(Request($"again-{i}", p, Greedy(16))))));

        Assert.Contains("injected failure", (await doomed).Error);
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Null(others[i].Error);
            Assert.Equal(expected[i].Tokens[0], others[i].Tokens[0]);
        }
        Assert.Equal(0, (await WaitIdle(engine)).Cache.TotalBytes);
    }

    [Fact]
    public void Bad_requests_are_refused_at_submission_with_the_parameter_named()
    {
        using var engine = Start(DemoTeacher, new EngineOptions { MaxModelLen = 64 });
        var prompt = Tokenizer.Encode(ChatPrompt("Describe System.Uri."));

        Assert.Equal("prompt", Assert.Throws<EngineRequestException>(() => engine.Submit(Request("empty", [], Greedy()))).Param);
        Assert.Equal("prompt", Assert.Throws<EngineRequestException>(() => engine.Submit(Request("vocab", [1, 8192], Greedy()))).Param);
        Assert.Equal("temperature", Assert.Throws<EngineRequestException>(() => engine.Submit(Request("t", prompt, Greedy() with { Temperature = -1 }))).Param);
        Assert.Equal("n", Assert.Throws<EngineRequestException>(() => engine.Submit(Request("n", prompt, Greedy() with { N = 0 }))).Param);
        Assert.Equal("logit_bias", Assert.Throws<EngineRequestException>(() => engine.Submit(Request("bias", prompt, Greedy() with { LogitBias = new Dictionary<int, double> { [9000] = 1 } }))).Param);
        var tooLong = Assert.Throws<EngineRequestException>(() => engine.Submit(Request("long", prompt, Greedy(60))));
        Assert.Equal("context_length_exceeded", tooLong.Code);
        Assert.Contains($"maximum context length is 64 tokens. However, you requested {prompt.Length + 60} tokens ({prompt.Length} in the prompt, 60 in the completion)", tooLong.Message);
    }

    [Fact]
    public async Task A_full_waiting_queue_refuses_more_requests()
    {
        using var engine = Start(DemoTeacher, new EngineOptions { MaxWaitingRequests = 2, MaxNumSeqs = 1 });
        var prompt = Tokenizer.Encode(ChatPrompt("Describe System.Uri."));
        using var cancel = new CancellationTokenSource();
        var accepted = new List<Task<Result>>();
        var refused = 0;
        for (var i = 0; i < 10; i++)
        {
            try
            {
                accepted.Add(Collect(engine.Submit(Request($"q{i}", prompt, Greedy(50) with { IgnoreEos = true }), cancel.Token)));
            }
            catch (EngineOverloadedException)
            {
                refused++;
            }
        }
        Assert.True(refused > 0, "more requests than seats and queue must be refused");
        Assert.True(accepted.Count >= 2);
        cancel.Cancel();
        await Task.WhenAll(accepted);
        Assert.Equal(0, (await WaitIdle(engine)).Cache.TotalBytes);
    }
}

/// <summary>Edge cases found in review: each pinned so it stays fixed.</summary>
public sealed class EdgeCaseTests
{
    private static readonly int[] Prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));

    [Theory]
    [InlineData(1, false)]   // the first choice finishes on its first token (max_tokens)
    [InlineData(40, false)]  // ... or on eos
    [InlineData(40, true)]
    public async Task N_choices_whose_first_choice_ends_at_once_complete_and_free_everything(int maxTokens, bool seeded)
    {
        using var engine = Start(DemoTeacher);
        var sampling = (seeded ? new SamplingParams { Temperature = 0.8, Seed = 5 } : Greedy()) with { N = 2, MaxTokens = maxTokens, StopTokenIds = maxTokens == 1 ? [] : [Tokenizer.Encode("Determines")[0]] };
        var result = await Collect(engine.Submit(Request("n2", Prompt, sampling)), n: 2);
        Assert.Null(result.Error);
        Assert.All(result.Reasons, r => Assert.NotNull(r));
        var idle = await WaitIdle(engine);
        Assert.Equal(0, idle.Cache.TotalBytes);
        Assert.Equal(0, idle.Cache.Sequences);
    }

    [Fact]
    public async Task Stop_strings_wait_for_min_tokens_like_vllm()
    {
        using var engine = Start(DemoTeacher);
        var early = await Collect(engine.Submit(Request("early", Prompt, Greedy(60) with { Stop = ["the"] })));
        var late = await Collect(engine.Submit(Request("late", Prompt, Greedy(60) with { Stop = ["the"], MinTokens = 12 })));
        Assert.Equal("Determines whe", early.TextOf()); // "the" inside "whether"
        Assert.True(late.Tokens[0].Count >= 12);
        Assert.StartsWith("Determines whether the current", late.TextOf());
    }

    [Fact]
    public async Task Top_p_applies_to_the_renormalised_top_k()
    {
        // With top_k = 1 every draw is the argmax, whatever top_p: the mass left after top-k is renormalised to 1.
        using var engine = Start(DemoTeacher);
        var greedy = await Collect(engine.Submit(Request("greedy", Prompt, Greedy(12) with { IgnoreEos = true })));
        var sampled = await Collect(engine.Submit(Request("topk1", Prompt, new SamplingParams { Temperature = 2.0, TopK = 1, TopP = 0.01, Seed = 3, MaxTokens = 12, IgnoreEos = true })));
        Assert.Equal(greedy.Tokens[0], sampled.Tokens[0]);
    }
}
