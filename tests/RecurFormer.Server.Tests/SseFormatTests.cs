using System.Net;
using System.Text;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>The event stream as bytes on the wire, not as a client library sees it.</summary>
[Collection(ServerCollection.Name)]
public sealed class SseFormatTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    private static object ReferenceRequest(bool stream) => new
    {
        model = TestServer.ModelId,
        messages = TestServer.ReferenceMessages,
        temperature = 0,
        stream,
        stream_options = stream ? new { include_usage = true } : null,
    };

    [Fact]
    public async Task ChatStream_IsRoleChunk_Deltas_FinishChunk_UsageChunk_Done_ByteForByte()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = TestServer.Json(ReferenceRequest(stream: true)) };
        using var response = await _server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("utf-8", response.Content.Headers.ContentType?.CharSet);
        Assert.Contains("no-cache", response.Headers.CacheControl?.ToString());
        var bytes = await response.Content.ReadAsByteArrayAsync();
        var body = Encoding.UTF8.GetString(bytes);

        // Parse the blocks only to learn the id, created and the deltas; then rebuild the exact expected bytes by hand.
        var blocks = body.Split("\n\n");
        Assert.Equal("", blocks[^1]);
        var first = JsonDocument.Parse(blocks[0]["data: ".Length..]).RootElement;
        var id = first.GetProperty("id").GetString()!;
        var created = first.GetProperty("created").GetInt64();
        Assert.StartsWith("chatcmpl-", id);
        var deltas = blocks[1..^4].Select(b => JsonDocument.Parse(b["data: ".Length..]).RootElement
            .GetProperty("choices")[0].GetProperty("delta").GetProperty("content").GetString()!).ToList();
        var usage = JsonDocument.Parse(blocks[^3]["data: ".Length..]).RootElement.GetProperty("usage");
        var promptTokens = usage.GetProperty("prompt_tokens").GetInt32();
        var completionTokens = usage.GetProperty("completion_tokens").GetInt32();

        var head = $$"""{"id":"{{id}}","object":"chat.completion.chunk","created":{{created}},"model":"{{TestServer.ModelId}}","choices":""";
        var expected = new StringBuilder();
        expected.Append($$"""data: {{head}}[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}""").Append("\n\n");
        foreach (var delta in deltas)
        {
            expected.Append($$"""data: {{head}}[{"index":0,"delta":{"content":{{JsonSerializer.Serialize(delta)}}},"logprobs":null,"finish_reason":null}]}""").Append("\n\n");
        }
        expected.Append($$"""data: {{head}}[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}""").Append("\n\n");
        expected.Append($$$"""data: {{{head}}}[],"usage":{"prompt_tokens":{{{promptTokens}}},"completion_tokens":{{{completionTokens}}},"total_tokens":{{{promptTokens + completionTokens}}}}}""").Append("\n\n");
        expected.Append("data: [DONE]\n\n");
        Assert.Equal(expected.ToString(), body);
        Assert.Equal(Encoding.UTF8.GetBytes(expected.ToString()), bytes);

        // The deltas are the non-streamed answer, token by token.
        Assert.True(deltas.Count > 1);
        Assert.Equal(deltas.Count, completionTokens - 1); // every token but the end-of-sequence one carries text
        Assert.Equal(TestServer.ReferenceAnswer, string.Concat(deltas));
        var plain = await _server.PostAsync("v1/chat/completions", ReferenceRequest(stream: false));
        var message = JsonDocument.Parse(await plain.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(string.Concat(deltas), message.GetProperty("content").GetString());
    }

    [Fact]
    public async Task ChatStream_WithoutIncludeUsage_HasNoUsageChunk()
    {
        var response = await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, max_tokens = 3, stream = true });
        var blocks = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", blocks[^1]);
        Assert.DoesNotContain(blocks, b => b.Contains("\"usage\""));
        Assert.Contains("\"finish_reason\":\"length\"", blocks[^2]);
    }

    [Fact]
    public async Task CompletionStream_HasTheSameIdOnEveryChunk_AndTextConcatenatesToTheNonStreamedText()
    {
        var request = new { prompt = "System.Threading.CancellationToken", max_tokens = 12, temperature = 0, stream = true, stream_options = new { include_usage = true } };
        var response = await _server.PostAsync("v1/completions", request);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var blocks = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", blocks[^1]);
        var chunks = blocks[..^1].Select(b => JsonDocument.Parse(b["data: ".Length..]).RootElement).ToList();
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        Assert.Single(chunks.Select(c => c.GetProperty("created").GetInt64()).Distinct());
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        Assert.Equal(12, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var text = string.Concat(chunks[..^1].Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));

        var plain = await _server.PostAsync("v1/completions", new { prompt = "System.Threading.CancellationToken", max_tokens = 12, temperature = 0 });
        var choice = JsonDocument.Parse(await plain.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0];
        Assert.Equal(choice.GetProperty("text").GetString(), text);
    }
}
