using System.Net;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>Completions shapes, n, tokenizer endpoints, version, OpenAPI and the request id.</summary>
[Collection(ServerCollection.Name)]
public sealed class EndpointTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    private static async Task<JsonElement> Json(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        return JsonDocument.Parse(body).RootElement;
    }

    [Fact]
    public async Task Completions_AcceptEveryPromptShape_AndNumberChoicesPromptTimesN()
    {
        var tokens = (await Json(await _server.Http.PostAsync("tokenize", TestServer.Json(new { prompt = "System.String" })))).GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        var single = await Json(await _server.PostAsync("v1/completions", new { prompt = "System.String", max_tokens = 4, temperature = 0 }));
        var byIds = await Json(await _server.PostAsync("v1/completions", new { prompt = tokens, max_tokens = 4, temperature = 0 }));
        Assert.Equal(single.GetProperty("choices")[0].GetProperty("text").GetString(), byIds.GetProperty("choices")[0].GetProperty("text").GetString());

        var many = await Json(await _server.PostAsync("v1/completions", new { prompt = new[] { "System.String", "System.Int32" }, max_tokens = 4, temperature = 0, n = 2 }));
        var choices = many.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2, 3], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal(single.GetProperty("choices")[0].GetProperty("text").GetString(), choices[0].GetProperty("text").GetString());
        Assert.Equal(16, many.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var lists = await Json(await _server.PostAsync("v1/completions", new { prompt = new[] { tokens, tokens }, max_tokens = 2, temperature = 0 }));
        Assert.Equal(2, lists.GetProperty("choices").GetArrayLength());
    }

    [Fact]
    public async Task ChatLogprobs_CoverEveryCompletionToken_TheStopTokenIncluded()
    {
        var answer = await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, max_tokens = 400, temperature = 0, logprobs = true }));
        var choice = answer.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString()); // the answer ends with the end-of-turn token
        var content = choice.GetProperty("logprobs").GetProperty("content");
        Assert.Equal(answer.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), content.GetArrayLength());
        Assert.Equal("<|im_end|>", content[content.GetArrayLength() - 1].GetProperty("token").GetString());
    }

    [Fact]
    public async Task Completions_EchoAndLegacyLogprobs()
    {
        var echo = await Json(await _server.PostAsync("v1/completions", new { prompt = "System.String", max_tokens = 3, temperature = 0, echo = true }));
        Assert.StartsWith("System.String", echo.GetProperty("choices")[0].GetProperty("text").GetString());

        var withLogprobs = await Json(await _server.PostAsync("v1/completions", new { prompt = "System.String", max_tokens = 3, temperature = 0, logprobs = 2 }));
        var logprobs = withLogprobs.GetProperty("choices")[0].GetProperty("logprobs");
        Assert.Equal(3, logprobs.GetProperty("tokens").GetArrayLength());
        Assert.Equal(3, logprobs.GetProperty("token_logprobs").GetArrayLength());
        Assert.Equal(3, logprobs.GetProperty("text_offset").GetArrayLength());
        Assert.All(logprobs.GetProperty("top_logprobs").EnumerateArray(), top => Assert.InRange(top.EnumerateObject().Count(), 1, 2));
        Assert.Equal(0, logprobs.GetProperty("text_offset")[0].GetInt32());
    }

    [Fact]
    public async Task Chat_NChoicesWithSeed_AreReproducible_AndStopStringsCut()
    {
        var request = new { messages = TestServer.ReferenceMessages, n = 3, temperature = 0.9, seed = 1234, max_tokens = 8 };
        var first = await Json(await _server.PostAsync("v1/chat/completions", request));
        var second = await Json(await _server.PostAsync("v1/chat/completions", request));
        Assert.Equal(3, first.GetProperty("choices").GetArrayLength());
        Assert.Equal(first.GetProperty("choices").ToString(), second.GetProperty("choices").ToString());

        var stopped = await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, stop = "Cancellation" }));
        var choice = stopped.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("Determines whether the current System.Threading.", choice.GetProperty("message").GetProperty("content").GetString());
    }

    [Fact]
    public async Task Chat_ContentAsTextParts_IsTheSameAsAString()
    {
        var parts = new object[]
        {
            new { role = "system", content = new[] { new { type = "text", text = TestServer.SystemMessage } } },
            new { role = "user", content = new[] { new { type = "text", text = TestServer.Question } } },
        };
        var answer = await Json(await _server.PostAsync("v1/chat/completions", new { messages = parts, temperature = 0 }));
        Assert.Equal(TestServer.ReferenceAnswer, answer.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }

    [Fact]
    public async Task TokenizeDetokenizeAndVersion_AreOpen_AndRoundTrip()
    {
        var tokenized = await Json(await _server.Anonymous.PostAsync("tokenize", TestServer.Json(new { prompt = "Hello .NET world" })));
        Assert.Equal(tokenized.GetProperty("tokens").GetArrayLength(), tokenized.GetProperty("count").GetInt32());
        Assert.Equal(2048, tokenized.GetProperty("max_model_len").GetInt32());
        var detokenized = await Json(await _server.Anonymous.PostAsync("detokenize", TestServer.Json(new { tokens = tokenized.GetProperty("tokens") })));
        Assert.Equal("Hello .NET world", detokenized.GetProperty("prompt").GetString());

        var chat = await Json(await _server.Anonymous.PostAsync("tokenize", TestServer.Json(new { messages = TestServer.ReferenceMessages })));
        var usage = (await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, max_tokens = 1 }))).GetProperty("usage");
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32(), chat.GetProperty("count").GetInt32());

        var version = await Json(await _server.Anonymous.GetAsync("version"));
        Assert.False(string.IsNullOrEmpty(version.GetProperty("version").GetString()));
    }

    [Fact]
    public async Task RequestId_IsHonouredAndReturned_OrGenerated()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/models");
        request.Headers.Add("X-Request-Id", "client-chosen-id-42");
        using var response = await _server.Http.SendAsync(request);
        Assert.Equal("client-chosen-id-42", Assert.Single(response.Headers.GetValues("X-Request-Id")));

        using var generated = await _server.Http.GetAsync("v1/models");
        Assert.Matches("^[0-9a-f]{32}$", Assert.Single(generated.Headers.GetValues("X-Request-Id")));
    }

    [Fact]
    public async Task OpenApi_DescribesEveryEndpoint_WithSchemasAndExamples_AndTheUiIsServed()
    {
        var document = await Json(await _server.Anonymous.GetAsync("openapi/v1.json"));
        var paths = document.GetProperty("paths");
        foreach (var path in new[] { "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{id}", "/tokenize", "/detokenize", "/version" })
        {
            Assert.True(paths.TryGetProperty(path, out _), $"{path} is not documented");
        }
        var chat = paths.GetProperty("/v1/chat/completions").GetProperty("post");
        var requestBody = chat.GetProperty("requestBody").GetProperty("content").GetProperty("application/json");
        Assert.Equal("#/components/schemas/ChatCompletionRequest", requestBody.GetProperty("schema").GetProperty("$ref").GetString());
        Assert.True(requestBody.TryGetProperty("example", out _));
        var ok = chat.GetProperty("responses").GetProperty("200").GetProperty("content");
        Assert.True(ok.GetProperty("application/json").TryGetProperty("example", out _));
        Assert.True(ok.TryGetProperty("text/event-stream", out _));
        Assert.True(chat.GetProperty("responses").GetProperty("400").GetProperty("content").GetProperty("application/json").TryGetProperty("example", out _));
        var schema = document.GetProperty("components").GetProperty("schemas").GetProperty("ChatCompletionRequest").GetProperty("properties");
        foreach (var field in new[] { "messages", "max_completion_tokens", "top_logprobs", "stream_options", "repetition_penalty", "stop_token_ids" })
        {
            Assert.True(schema.TryGetProperty(field, out _), $"{field} missing from the schema");
        }

        var ui = await _server.Anonymous.GetAsync("docs/index.html");
        Assert.Equal(HttpStatusCode.OK, ui.StatusCode);
        Assert.Contains("swagger", await ui.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
    }
}
