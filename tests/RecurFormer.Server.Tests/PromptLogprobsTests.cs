using System.Text.Json;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Evaluation;
using RecurFormer.Toolkit.Data;

namespace RecurFormer.Server.Tests;

/// <summary>
/// The prompt's own log-probabilities, as lm-evaluation-harness asks for them (<c>echo</c> + <c>logprobs</c> +
/// <c>max_tokens: 1</c>) and as vLLM's <c>prompt_logprobs</c> returns them, checked against the same model run through
/// the toolkit's evaluator (the <c>eval</c> command).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class PromptLogprobsTests(SharedServer shared)
{
    private const string Context = "Determines whether the current";

    // The reference answer's first sentence: the model goes on with " It", so the one generated token is a real token
    // (a stop token sends no token, and lm-evaluation-harness drops the last entry of token_logprobs).
    private const string Text = "Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object.";
    private readonly TestServer _server = shared.Server;

    [Fact]
    public async Task LoglikelihoodRequests_SumToWhatTheEvaluatorComputes()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(TestServer.DemoTeacher);
        var separator = tokenizer.GetTokenId("<|endoftext|>");
        var continuation = Text[Context.Length..];
        int[] context = [separator, .. tokenizer.Encode(Context)];
        var continuationIds = tokenizer.Encode(continuation);
        Assert.Equal((IEnumerable<int>)tokenizer.Encode(Text), [.. context[1..], .. continuationIds]); // no merge across the boundary

        // lm-evaluation-harness' local-completions request for loglikelihood(context, continuation).
        var response = await _server.PostAsync("v1/completions", new { model = TestServer.ModelId, prompt = context.Concat(continuationIds), echo = true, logprobs = 1, max_tokens = 1, temperature = 0 });
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(response.IsSuccessStatusCode, body.RootElement.ToString());
        var choice = body.RootElement.GetProperty("choices")[0];
        var logprobs = choice.GetProperty("logprobs");
        var tokenLogprobs = logprobs.GetProperty("token_logprobs").EnumerateArray().ToList();
        Assert.Equal(context.Length + continuationIds.Length + 1, tokenLogprobs.Count); // the prompt, then the one generated token
        Assert.Equal(JsonValueKind.Null, tokenLogprobs[0].ValueKind);
        Assert.StartsWith(tokenizer.Decode(context), choice.GetProperty("text").GetString());
        var loglikelihood = tokenLogprobs[context.Length..^1].Sum(t => t.GetDouble());
        var all = tokenLogprobs[1..^1].Sum(t => t.GetDouble());
        Assert.True(loglikelihood < 0 && all < loglikelihood);
        // top_logprobs, from which the harness reads is_greedy: the most likely token is at least as likely as the actual one.
        var tops = logprobs.GetProperty("top_logprobs").EnumerateArray().ToList();
        for (var i = 1; i < tokenLogprobs.Count; i++)
        {
            Assert.True(tops[i].EnumerateObject().Single().Value.GetDouble() >= tokenLogprobs[i].GetDouble() - 1e-6);
        }

        // The evaluator scores a line as the separator followed by its tokens: the same tokens, the same model.
        var target = TorchRuntime.Initialize(new TorchOptions { Threads = 2 });
        using var model = CausalLMLoader.FromPretrained(TestServer.DemoTeacher, target);
        var report = new Evaluator(model, tokenizer, new EvalOptions()).Evaluate([new ValidationExample(1, ValidationExample.Doc, Text, null, null)]);
        var tokens = (int)report["tokens"]!["all"]!.GetValue<long>();
        var perplexity = report["perplexity"]!["all"]!.GetValue<double>();
        Assert.Equal(tokenLogprobs.Count - 2, tokens);
        Assert.Equal(-tokens * Math.Log(perplexity), all, 3);
    }

    [Fact]
    public async Task PromptLogprobs_OnChat_HaveOneEntryPerPromptToken_TheFirstNull()
    {
        var response = await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, max_tokens = 1, prompt_logprobs = 2 });
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(response.IsSuccessStatusCode, body.RootElement.ToString());
        var entries = body.RootElement.GetProperty("prompt_logprobs").EnumerateArray().ToList();
        Assert.Equal(body.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), entries.Count);
        Assert.Equal(JsonValueKind.Null, entries[0].ValueKind);
        Assert.All(entries.Skip(1), entry =>
        {
            var alternatives = entry.EnumerateObject().ToList();
            Assert.InRange(alternatives.Count, 1, 3); // the token itself and up to two alternatives
            Assert.All(alternatives, a => Assert.True(a.Value.GetProperty("logprob").GetDouble() <= 0));
        });
    }

    [Fact]
    public async Task EchoWithLogprobs_Streamed_SendsThePromptsLogprobsInTheEchoChunk()
    {
        var request = new { prompt = Context, echo = true, logprobs = 1, max_tokens = 2, temperature = 0 };
        using var whole = JsonDocument.Parse(await (await _server.PostAsync("v1/completions", request)).Content.ReadAsStringAsync());
        var expected = whole.RootElement.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("token_logprobs").EnumerateArray().Select(t => t.ValueKind == JsonValueKind.Null ? (double?)null : t.GetDouble()).ToList();

        var response = await _server.PostAsync("v1/completions", new { request.prompt, request.echo, request.logprobs, request.max_tokens, request.temperature, stream = true });
        var streamed = new List<double?>();
        var text = "";
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        foreach (var block in await SseBlocks.Read(reader, b => b == "data: [DONE]"))
        {
            if (block == "data: [DONE]")
            {
                break;
            }
            using var chunk = JsonDocument.Parse(block["data: ".Length..]);
            var choice = chunk.RootElement.GetProperty("choices")[0];
            text += choice.GetProperty("text").GetString();
            if (choice.GetProperty("logprobs").ValueKind == JsonValueKind.Object)
            {
                streamed.AddRange(choice.GetProperty("logprobs").GetProperty("token_logprobs").EnumerateArray().Select(t => t.ValueKind == JsonValueKind.Null ? (double?)null : t.GetDouble()));
            }
        }
        Assert.StartsWith(Context, text);
        Assert.Equal(expected, streamed);
    }
}
