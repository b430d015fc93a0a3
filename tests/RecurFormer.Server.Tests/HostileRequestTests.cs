using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>
/// Malformed and hostile requests: each gets the right 4xx and the OpenAI error JSON (never HTML, an empty body, a 500
/// or a stack trace), and the server answers correctly afterwards.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HostileRequestTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    /// <summary>One bad request: what to send and what must come back.</summary>
    public sealed record Case(string Name, string Method, string Path, Func<byte[]>? Body, string? ContentType, int Status, string? Code = null, string? Param = null, string? Auth = TestServer.ApiKey)
    {
        public override string ToString() => Name;
    }

    private const string Chat = "v1/chat/completions";
    private const string Completions = "v1/completions";

    private static Func<byte[]> Text(string json) => () => Encoding.UTF8.GetBytes(json);

    private static Func<byte[]> ChatWith(string fields) =>
        Text($$"""{"messages":[{"role":"user","content":"Explain System.String."}],{{fields}}}""");

    private static readonly Case[] All =
    [
        new("truncated JSON", "POST", Chat, Text("""{"messages":[{"role":"user","content":"hi"}"""), "application/json", 400, "invalid_json"),
        new("not JSON at all", "POST", Chat, Text("hello there"), "application/json", 400, "invalid_json"),
        new("empty body", "POST", Chat, Text(""), "application/json", 400, "invalid_json"),
        new("JSON null body", "POST", Chat, Text("null"), "application/json", 400),
        new("JSON array body", "POST", Chat, Text("[]"), "application/json", 400, "invalid_json"),
        new("JSON string body", "POST", Chat, Text("\"messages\""), "application/json", 400, "invalid_json"),
        new("trailing comma", "POST", Chat, Text("""{"messages":[{"role":"user","content":"hi"}],}"""), "application/json", 400, "invalid_json"),
        new("messages is a number", "POST", Chat, Text("""{"messages":5}"""), "application/json", 400, "invalid_json", "messages"),
        new("messages empty", "POST", Chat, Text("""{"messages":[]}"""), "application/json", 400, Param: "messages"),
        new("messages missing", "POST", Chat, Text("""{"model":"dotnet-docs-qwen2-16m"}"""), "application/json", 400, Param: "messages"),
        new("message without role", "POST", Chat, Text("""{"messages":[{"content":"hi"}]}"""), "application/json", 400, Param: "messages[0].role"),
        new("unknown role", "POST", Chat, Text("""{"messages":[{"role":"wizard","content":"hi"}]}"""), "application/json", 400, Param: "messages[0].role"),
        new("content is a number", "POST", Chat, Text("""{"messages":[{"role":"user","content":42}]}"""), "application/json", 400, Param: "messages[0].content"),
        new("image content part", "POST", Chat, Text("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}"""), "application/json", 400, Param: "messages[0].content[0]"),
        new("max_tokens is a string", "POST", Chat, ChatWith("\"max_tokens\":\"many\""), "application/json", 400, "invalid_json", "max_tokens"),
        new("max_tokens negative", "POST", Chat, ChatWith("\"max_tokens\":-5"), "application/json", 400, Param: "max_tokens"),
        new("max_tokens zero", "POST", Chat, ChatWith("\"max_tokens\":0"), "application/json", 400, Param: "max_tokens"),
        new("max_tokens huge", "POST", Chat, ChatWith("\"max_tokens\":2147483647"), "application/json", 400, "context_length_exceeded", "max_tokens"),
        new("max_tokens overflows an int", "POST", Chat, ChatWith("\"max_tokens\":1e30"), "application/json", 400, "invalid_json", "max_tokens"),
        new("max_tokens fractional", "POST", Chat, ChatWith("\"max_tokens\":1.5"), "application/json", 400, "invalid_json", "max_tokens"),
        new("max_completion_tokens over the context", "POST", Chat, ChatWith("\"max_completion_tokens\":5000"), "application/json", 400, "context_length_exceeded", "max_completion_tokens"),
        new("n zero", "POST", Chat, ChatWith("\"n\":0"), "application/json", 400, Param: "n"),
        new("n 1000", "POST", Chat, ChatWith("\"n\":1000"), "application/json", 400, Param: "n"),
        new("temperature -1", "POST", Chat, ChatWith("\"temperature\":-1"), "application/json", 400, Param: "temperature"),
        new("temperature is a string", "POST", Chat, ChatWith("\"temperature\":\"hot\""), "application/json", 400, "invalid_json", "temperature"),
        new("top_p zero", "POST", Chat, ChatWith("\"top_p\":0"), "application/json", 400, Param: "top_p"),
        new("top_p 2", "POST", Chat, ChatWith("\"top_p\":2"), "application/json", 400, Param: "top_p"),
        new("top_k -5", "POST", Chat, ChatWith("\"top_k\":-5"), "application/json", 400, Param: "top_k"),
        new("presence_penalty 5", "POST", Chat, ChatWith("\"presence_penalty\":5"), "application/json", 400, Param: "presence_penalty"),
        new("frequency_penalty -3", "POST", Chat, ChatWith("\"frequency_penalty\":-3"), "application/json", 400, Param: "frequency_penalty"),
        new("repetition_penalty 0", "POST", Chat, ChatWith("\"repetition_penalty\":0"), "application/json", 400, Param: "repetition_penalty"),
        new("min_tokens above max_tokens", "POST", Chat, ChatWith("\"max_tokens\":4,\"min_tokens\":9"), "application/json", 400, Param: "min_tokens"),
        new("logit_bias key not a token id", "POST", Chat, ChatWith("\"logit_bias\":{\"abc\":1}"), "application/json", 400, Param: "logit_bias"),
        new("logit_bias token outside the vocabulary", "POST", Chat, ChatWith("\"logit_bias\":{\"999999\":1}"), "application/json", 400, Param: "logit_bias"),
        new("logit_bias value 500", "POST", Chat, ChatWith("\"logit_bias\":{\"5\":500}"), "application/json", 400, Param: "logit_bias"),
        new("top_logprobs 50", "POST", Chat, ChatWith("\"logprobs\":true,\"top_logprobs\":50"), "application/json", 400, Param: "top_logprobs"),
        new("top_logprobs without logprobs", "POST", Chat, ChatWith("\"top_logprobs\":2"), "application/json", 400, Param: "top_logprobs"),
        new("stop is a number", "POST", Chat, ChatWith("\"stop\":5"), "application/json", 400, "invalid_json", "stop"),
        new("17 stop strings", "POST", Chat, ChatWith("\"stop\":[" + string.Join(",", Enumerable.Range(0, 17).Select(i => $"\"s{i}\"")) + "]"), "application/json", 400, Param: "stop"),
        new("stop_token_ids outside the vocabulary", "POST", Chat, ChatWith("\"stop_token_ids\":[-1]"), "application/json", 400, Param: "stop_token_ids"),
        new("stream is a string", "POST", Chat, ChatWith("\"stream\":\"yes\""), "application/json", 400, "invalid_json", "stream"),
        new("unknown model", "POST", Chat, ChatWith("\"model\":\"gpt-4o\""), "application/json", 404, "model_not_found", "model"),
        new("1 MB message", "POST", Chat, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = new string('a', 1 << 20) } } })), "application/json", 400, "context_length_exceeded"),
        new("100,000 messages", "POST", Chat, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { messages = Enumerable.Range(0, 100_000).Select(_ => new { role = "user", content = "a" }) })), "application/json", 400),
        new("invalid UTF-8 in content", "POST", Chat, () => [.. "{\"messages\":[{\"role\":\"user\",\"content\":\""u8, 0xFF, 0xFE, 0xC3, .. "\"}]}"u8], "application/json", 400, "invalid_json"),
        new("invalid UTF-8 in an ignored field name", "POST", Chat, () => [.. "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\""u8, 0xC0, 0xAF, .. "\":1}"u8], "application/json", 400, "invalid_json"),
        new("invalid UTF-8 in a role", "POST", Chat, () => [.. "{\"messages\":[{\"role\":\""u8, 0xED, 0xA0, 0x80, .. "\",\"content\":\"x\"}]}"u8], "application/json", 400),
        new("deeply nested JSON", "POST", Chat, () => Encoding.UTF8.GetBytes("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"x\":" + new string('[', 100_000) + new string(']', 100_000) + "}"), "application/json", 400, "invalid_json"),
        new("body over the size limit", "POST", Chat, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = new string('a', 5 << 20) } } })), "application/json", 413, "request_too_large"),
        new("text/plain content type", "POST", Chat, ChatWith("\"max_tokens\":1"), "text/plain", 415, "unsupported_media_type"),
        new("form content type", "POST", Chat, Text("messages=hi"), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        new("no content type", "POST", Chat, ChatWith("\"max_tokens\":1"), null, 415, "unsupported_media_type"),
        new("missing API key", "POST", Chat, ChatWith("\"max_tokens\":1"), "application/json", 401, "invalid_api_key", Auth: null),
        new("wrong API key", "POST", Chat, ChatWith("\"max_tokens\":1"), "application/json", 401, "invalid_api_key", Auth: "sk-wrong"),
        new("API key one character short", "GET", "v1/models", null, null, 401, "invalid_api_key", Auth: TestServer.ApiKey[..^1]),
        new("GET on a POST endpoint", "GET", Chat, null, null, 405, "method_not_allowed"),
        new("DELETE on models", "DELETE", "v1/models", null, null, 405, "method_not_allowed"),
        new("unknown /v1 route", "POST", "v1/embeddings", ChatWith("\"max_tokens\":1"), "application/json", 404, "not_found"),
        new("unknown route", "GET", "admin/../../etc/passwd", null, null, 404, "not_found"),
        new("unknown model by id", "GET", "v1/models/gpt-4o", null, null, 404, "model_not_found"),
        new("completion prompt is an object", "POST", Completions, Text("""{"prompt":{"text":"x"}}"""), "application/json", 400, Param: "prompt"),
        new("completion prompt missing", "POST", Completions, Text("""{"max_tokens":3}"""), "application/json", 400, Param: "prompt"),
        new("completion prompt empty list", "POST", Completions, Text("""{"prompt":[]}"""), "application/json", 400, Param: "prompt"),
        new("completion prompt mixes strings and ids", "POST", Completions, Text("""{"prompt":["a",5]}"""), "application/json", 400, Param: "prompt"),
        new("completion token id outside the vocabulary", "POST", Completions, Text("""{"prompt":[1,2,99999999]}"""), "application/json", 400, Param: "prompt"),
        new("completion prompt longer than the context", "POST", Completions, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { prompt = Enumerable.Repeat(100, 2100) })), "application/json", 400, "context_length_exceeded", "prompt"),
        new("completion logprobs 10", "POST", Completions, Text("""{"prompt":"x","logprobs":10}"""), "application/json", 400, Param: "logprobs"),
        new("completion suffix", "POST", Completions, Text("""{"prompt":"x","suffix":"y"}"""), "application/json", 400, Param: "suffix"),
        new("completion 300 prompts times n", "POST", Completions, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { prompt = Enumerable.Repeat("x", 30), n = 10 })), "application/json", 400, Param: "prompt"),
        new("detokenize id outside the vocabulary", "POST", "detokenize", Text("""{"tokens":[123456789]}"""), "application/json", 400, Param: "tokens"),
        new("tokenize without prompt", "POST", "tokenize", Text("""{}"""), "application/json", 400, Param: "prompt"),
        // Tool calling and structured output: every bad schema, tool or grammar is a 400 naming the field, before anything runs.
        new("tools is an object", "POST", Chat, ChatWith(""" "tools":{"type":"function"} """), "application/json", 400, Param: "tools"),
        new("tool of type code_interpreter", "POST", Chat, ChatWith(""" "tools":[{"type":"code_interpreter"}] """), "application/json", 400, "unsupported_parameter", "tools[0].type"),
        new("tool without a name", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"parameters":{"type":"object"}}}] """), "application/json", 400, Param: "tools[0].function.name"),
        new("tool name with spaces", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"get weather"}}] """), "application/json", 400, Param: "tools[0].function.name"),
        new("two tools with one name", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}] """), "application/json", 400, Param: "tools"),
        new("tool parameters not an object schema", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"string"}}}] """), "application/json", 400, "invalid_schema", "tools[0].function.parameters"),
        new("tool parameters with an invalid schema", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"wizard"}}}}}] """), "application/json", 400, "invalid_schema", "tools"),
        new("tool_choice names an unknown tool", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}} """), "application/json", 400, Param: "tool_choice"),
        new("tool_choice required without tools", "POST", Chat, ChatWith(""" "tool_choice":"required" """), "application/json", 400, Param: "tool_choice"),
        new("tool_choice is a made-up word", "POST", Chat, ChatWith(""" "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"always" """), "application/json", 400, Param: "tool_choice"),
        new("response_format is a string", "POST", Chat, ChatWith(""" "response_format":"json" """), "application/json", 400, Param: "response_format"),
        new("response_format of an unknown type", "POST", Chat, ChatWith(""" "response_format":{"type":"xml"} """), "application/json", 400, Param: "response_format.type"),
        new("json_schema without a name", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}} """), "application/json", 400, Param: "response_format.json_schema.name"),
        new("json_schema with an invalid schema", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"n":{"type":"number","minimum":"zero"}}}}} """), "application/json", 400, "invalid_schema", "response_format.json_schema.schema"),
        new("json_schema with an unsupported keyword", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object","properties":{"a":{"not":{"type":"null"}}}}}} """), "application/json", 400, "invalid_schema", "response_format.json_schema.schema"),
        new("json_schema of 1 MB", "POST", Chat, () => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = "hi" } }, response_format = new { type = "json_schema", json_schema = new { name = "big", schema = new { type = "string", @enum = Enumerable.Range(0, 40_000).Select(i => $"value-{i:D6}-abcdefghijklmno") } } } })), "application/json", 400, "schema_too_large", "response_format.json_schema.schema"),
        new("json_schema whose $ref recurses without end", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"next":{"$ref":"#"}},"required":["next"]}}} """), "application/json", 400, "invalid_schema", "response_format.json_schema.schema"),
        new("json_schema that refers to itself", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"$ref":"#"}}} """), "application/json", 400, "invalid_schema", "response_format.json_schema.schema"),
        new("json_schema with a remote $ref", "POST", Chat, ChatWith(""" "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"$ref":"http://169.254.169.254/schema"}}} """), "application/json", 400, "invalid_schema", "response_format.json_schema.schema"),
        new("guided_regex that never matches", "POST", Chat, ChatWith(""" "guided_regex":"[^\\s\\S]" """), "application/json", 400, "invalid_regex", "guided_regex"),
        new("guided_regex with a backreference", "POST", Completions, Text("""{"prompt":"x","guided_regex":"(a)\\1"}"""), "application/json", 400, "invalid_regex", "guided_regex"),
        new("guided_choice empty", "POST", Chat, ChatWith(""" "guided_choice":[] """), "application/json", 400, Param: "guided_choice"),
        new("guided_grammar that is not GBNF", "POST", Chat, ChatWith(""" "guided_grammar":"start: \"a\"" """), "application/json", 400, "invalid_grammar", "guided_grammar"),
        new("guided_json and guided_regex together", "POST", Chat, ChatWith(""" "guided_json":{"type":"object"},"guided_regex":"a+" """), "application/json", 400, Param: "guided_regex"),
        new("guided_whitespace_pattern", "POST", Chat, ChatWith(""" "guided_json":{"type":"object"},"guided_whitespace_pattern":"\\s*" """), "application/json", 400, "unsupported_parameter", "guided_whitespace_pattern"),
        new("chat_template_kwargs overriding messages", "POST", Chat, ChatWith(""" "chat_template_kwargs":{"messages":[]} """), "application/json", 400, Param: "chat_template_kwargs"),
        new("prompt_logprobs 50", "POST", Completions, Text("""{"prompt":"x","prompt_logprobs":50}"""), "application/json", 400, Param: "prompt_logprobs"),
        new("prompt_logprobs streamed", "POST", Chat, ChatWith(""" "prompt_logprobs":1,"stream":true """), "application/json", 400, Param: "prompt_logprobs"),
    ];

    public static TheoryData<Case> Cases() => [.. All];

    private async Task<HttpResponseMessage> Send(Case c)
    {
        using var request = new HttpRequestMessage(new HttpMethod(c.Method), c.Path);
        if (c.Body is not null)
        {
            request.Content = new ByteArrayContent(c.Body());
            if (c.ContentType is not null)
            {
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(c.ContentType);
            }
        }
        // As curl does for large bodies: the server can refuse by the headers (413) before the body is sent.
        request.Headers.ExpectContinue = c.Status == 413;
        if (c.Auth is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", c.Auth);
        }
        return await _server.Anonymous.SendAsync(request);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task BadRequest_GetsTheRightStatusAndOpenAiErrorJson(Case c)
    {
        using var response = await Send(c);
        await ErrorAssert.IsOpenAiError(response, c.Status, c.Code, c.Param);
    }

    [Fact]
    public void ThereAreAtLeastFortyCases() => Assert.True(All.Length >= 40, $"{All.Length} cases");

    [Fact]
    public async Task AfterEveryBadRequestAtOnce_TheServerStillAnswersTheReferenceQuestion()
    {
        var responses = await Task.WhenAll(All.Select(Send));
        Assert.All(responses.Zip(All), pair => Assert.Equal(pair.Second.Status, (int)pair.First.StatusCode));

        var answer = await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0 });
        var body = JsonDocument.Parse(await answer.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(TestServer.ReferenceAnswer, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        var stats = await _server.WaitIdleAsync();
        Assert.Equal(0, stats.Cache.TotalBytes);
    }

    [Fact]
    public async Task Unauthenticated_HealthMetricsAndDocs_StayOpen()
    {
        Assert.Equal(HttpStatusCode.OK, (await _server.Anonymous.GetAsync("health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _server.Anonymous.GetAsync("health/ready")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _server.Anonymous.GetAsync("metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _server.Anonymous.GetAsync("openapi/v1.json")).StatusCode);
        var denied = await _server.Anonymous.GetAsync("v1/models");
        Assert.Equal("Bearer", denied.Headers.WwwAuthenticate.ToString());
    }
}
