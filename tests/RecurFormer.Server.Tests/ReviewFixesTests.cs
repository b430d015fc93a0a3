using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;

namespace RecurFormer.Server.Tests;

/// <summary>
/// Request ids on errors, text-length limits before tokenizing, TTFT of a stop-token-first answer, the model card,
/// refused unsupported fields and the OpenAPI document: on the shared server.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class ReviewFixesTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    /// <summary>Longest text that could fit the demo model's context: 2048 tokens × 32 characters.</summary>
    private const int TextLimit = 2048 * 32;

    private static async Task<JsonElement> Json(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        return JsonDocument.Parse(body).RootElement;
    }

    public static TheoryData<string, string, string?, string?, int> ErrorRequests() => new()
    {
        // method, path, JSON body (null = none), content type, expected status
        { "POST", "v1/chat/completions", """{"messages":[]}""", "application/json", 400 },                      // thrown by the endpoint
        { "POST", "v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}""", "application/json", 400 }, // thrown by binding
        { "POST", "v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}""", "application/json", 404 }, // model_not_found
        { "GET", "v1/models/gpt-4o", null, null, 404 },
        { "POST", "v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"n":0}""", "application/json", 400 },
        { "POST", "v1/chat/completions", "messages=hi", "text/plain", 415 },
        { "GET", "v1/chat/completions", null, null, 405 },
        { "GET", "v1/nothing-here", null, null, 404 },
        { "POST", "v1/completions", """{"prompt":{"x":1}}""", "application/json", 400 },
        { "POST", "tokenize", """{}""", "application/json", 400 },
    };

    [Theory]
    [MemberData(nameof(ErrorRequests))]
    public async Task RequestId_IsReturnedOnErrorResponses_Too(string method, string path, string? body, string? contentType, int status)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (body is not null)
        {
            request.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType!);
        }
        var id = "review-" + Guid.NewGuid().ToString("N");
        request.Headers.Add("X-Request-Id", id);
        using var response = await _server.Http.SendAsync(request);
        Assert.Equal(status, (int)response.StatusCode);
        Assert.True(response.Headers.TryGetValues("X-Request-Id", out var values), $"no X-Request-Id on the {status} answer to {method} {path}");
        Assert.Equal(id, Assert.Single(values));
    }

    [Fact]
    public async Task RequestId_IsReturnedOn401_Too()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/models");
        request.Headers.Add("X-Request-Id", "unauthenticated-1");
        using var response = await _server.Anonymous.SendAsync(request);
        await ErrorAssert.IsOpenAiError(response, 401, "invalid_api_key");
        Assert.Equal("unauthenticated-1", Assert.Single(response.Headers.GetValues("X-Request-Id")));
    }

    [Fact]
    public async Task TextLongerThanTheContextCouldHold_IsRefusedBeforeTokenizing_OnEveryEndpoint()
    {
        var tooLong = new string('a', TextLimit + 1);

        var chat = await _server.PostAsync("v1/chat/completions", new { messages = new[] { new { role = "user", content = tooLong } } });
        var error = await ErrorAssert.IsOpenAiError(chat, 400, "context_length_exceeded", "messages");
        Assert.Contains($"{TextLimit + 1 + "user".Length} characters", error.GetProperty("message").GetString());

        // Many small messages add up (each counts its text and role).
        var many = Enumerable.Range(0, TextLimit / 8).Select(_ => new { role = "user", content = "abcd" }).ToArray();
        var manyError = await ErrorAssert.IsOpenAiError(await _server.PostAsync("v1/chat/completions", new { messages = many }), 400, "context_length_exceeded", "messages");
        Assert.Contains("characters", manyError.GetProperty("message").GetString());

        var completion = await _server.PostAsync("v1/completions", new { prompt = tooLong });
        var completionError = await ErrorAssert.IsOpenAiError(completion, 400, "context_length_exceeded", "prompt");
        Assert.Contains($"{TextLimit + 1} characters", completionError.GetProperty("message").GetString());

        var listed = await _server.PostAsync("v1/completions", new { prompt = new[] { "short", tooLong } });
        await ErrorAssert.IsOpenAiError(listed, 400, "context_length_exceeded", "prompt");

        // /tokenize used to tokenize anything the body limit let through.
        var tokenize = await _server.Anonymous.PostAsync("tokenize", TestServer.Json(new { prompt = tooLong }));
        await ErrorAssert.IsOpenAiError(tokenize, 400, "context_length_exceeded", "prompt");
        var tokenizeChat = await _server.Anonymous.PostAsync("tokenize", TestServer.Json(new { messages = new[] { new { role = "user", content = tooLong } } }));
        await ErrorAssert.IsOpenAiError(tokenizeChat, 400, "context_length_exceeded", "messages");

        // Text just under the bound is still tokenized (and may fit or not by its real token count).
        var fits = await _server.Anonymous.PostAsync("tokenize", TestServer.Json(new { prompt = new string('a', 1000) }));
        Assert.Equal(HttpStatusCode.OK, fits.StatusCode);
    }

    [Fact]
    public async Task CompletionPromptsTimesN_IsCheckedBeforeAnyPromptIsTokenized()
    {
        // The first prompt alone is longer than the context: had it been tokenized first, that would be the error.
        var prompts = new[] { string.Concat(Enumerable.Repeat("hello world ", 4000)) }.Concat(Enumerable.Repeat("x", 29)).ToArray();
        var response = await _server.PostAsync("v1/completions", new { prompt = prompts, n = 10 });
        var error = await ErrorAssert.IsOpenAiError(response, 400, "invalid_request", "prompt");
        Assert.Contains("30 prompts × n = 10", error.GetProperty("message").GetString());

        // n out of range is still reported as such.
        await ErrorAssert.IsOpenAiError(await _server.PostAsync("v1/completions", new { prompt = "x", n = 1000 }), 400, param: "n");
    }

    [Fact]
    public async Task TimeToFirstToken_IsRecorded_WhenTheFirstTokenIsAStopToken()
    {
        // The greedy answer's first token, made a stop token: the answer is empty but one token was generated.
        var first = await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, max_tokens = 1 }));
        var firstText = first.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        var tokens = (await Json(await _server.Http.PostAsync("tokenize", TestServer.Json(new { prompt = firstText, add_special_tokens = false })))).GetProperty("tokens");
        var stopId = Assert.Single(tokens.EnumerateArray()).GetInt32();

        var factory = _server.App.Services.GetRequiredService<IMeterFactory>();
        var recorded = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Name == "recurformer_time_to_first_token_seconds" && ReferenceEquals(instrument.Meter.Scope, factory))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((_, _, _, _) => Interlocked.Increment(ref recorded));
        listener.Start();

        var stopped = await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, max_tokens = 8, stop_token_ids = new[] { stopId } }));
        var choice = stopped.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(1, stopped.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        // The metric is recorded before the run's events complete, so before the response was written.
        Assert.Equal(1, Volatile.Read(ref recorded));
    }

    [Fact]
    public async Task ModelCard_RootIsTheFolderName_NotThePathOnTheServer()
    {
        var list = await Json(await _server.Http.GetAsync("v1/models"));
        Assert.Equal(TestServer.ModelId, list.GetProperty("data")[0].GetProperty("root").GetString());
        var card = await Json(await _server.Http.GetAsync($"v1/models/{TestServer.ModelId}"));
        Assert.Equal(TestServer.ModelId, card.GetProperty("root").GetString());
        Assert.DoesNotContain(TestServer.RepositoryRoot, card.ToString());
    }

    public static TheoryData<string, object> StreamOptionsWithoutStream() => new()
    {
        { "v1/chat/completions", new { messages = TestServer.ReferenceMessages, stream = false, stream_options = new { include_usage = true } } },
        { "v1/chat/completions", new { messages = TestServer.ReferenceMessages, stream_options = new { include_usage = true } } },
        { "v1/completions", new { prompt = "x", stream_options = new { include_usage = true } } },
    };

    [Theory]
    [MemberData(nameof(StreamOptionsWithoutStream))]
    public async Task StreamOptionsWithoutStream_AreRefusedWith400_NotSilentlyIgnored(string path, object body)
    {
        var error = await ErrorAssert.IsOpenAiError(await _server.PostAsync(path, body), 400, param: "stream_options");
        Assert.Contains("'stream' is true", error.GetProperty("message").GetString()!);
    }

    [Fact]
    public async Task ToolChoiceNone_EmptyTools_AndTextResponseFormat_AreAccepted()
    {
        var answer = await Json(await _server.PostAsync("v1/chat/completions", new
        {
            messages = TestServer.ReferenceMessages,
            temperature = 0,
            tools = new[] { new { type = "function", function = new { name = "f" } } },
            tool_choice = "none",
            response_format = new { type = "text" },
        }));
        Assert.Equal(TestServer.ReferenceAnswer, answer.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        await Json(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, max_tokens = 1, tools = Array.Empty<object>(), stream_options = (object?)null }));
    }

    [Fact]
    public async Task OpenApi_RequestSchemasAllowUnknownFields_AndHealthAndMetricsAreDocumented()
    {
        var text = await _server.Anonymous.GetStringAsync("openapi/v1.json");
        using var document = JsonDocument.Parse(text);
        var schemas = document.RootElement.GetProperty("components").GetProperty("schemas");
        foreach (var schema in schemas.EnumerateObject())
        {
            Assert.False(schema.Value.TryGetProperty("additionalProperties", out var additional) && additional.ValueKind == JsonValueKind.False,
                $"{schema.Name} forbids unknown fields, which the server ignores");
        }
        Assert.DoesNotContain("\"additionalProperties\": false", text);
        Assert.DoesNotContain("\"additionalProperties\":false", text);

        var paths = document.RootElement.GetProperty("paths");
        foreach (var path in new[] { "/health/live", "/health/ready", "/metrics" })
        {
            Assert.True(paths.TryGetProperty(path, out var item), $"{path} is not documented");
            Assert.True(item.GetProperty("get").GetProperty("responses").TryGetProperty("200", out _));
        }
        Assert.True(paths.GetProperty("/health/ready").GetProperty("get").GetProperty("responses").TryGetProperty("503", out _));
        Assert.True(paths.TryGetProperty("/v1/models/{id}", out _), "/v1/models/{id} is not documented");
    }
}
