using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using RecurFormer.Server.Errors;

namespace RecurFormer.Server.Streaming;

/// <summary>
/// Server-sent events as OpenAI streams them: <c>data: JSON</c> blocks, a final <c>data: [DONE]</c>, comments as
/// keep-alives, and an <c>error</c> event when something fails after the headers went out. Every block is flushed at
/// once: a token that sits in a buffer is latency the client sees.
/// </summary>
public sealed class SseWriter(HttpResponse response, JsonSerializerOptions json)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] BlockEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();
    private static readonly byte[] KeepAlive = ": keep-alive\n\n"u8.ToArray();
    private static readonly byte[] ErrorEvent = "event: error\n"u8.ToArray();

    /// <summary>Sends the headers now, so that the client knows the request was accepted before the first token.</summary>
    public async Task StartAsync(CancellationToken cancellation)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no"; // nginx and friends: do not buffer the stream
        response.HttpContext.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await response.StartAsync(cancellation);
        await response.Body.FlushAsync(cancellation);
    }

    public async Task WriteAsync<T>(T payload, CancellationToken cancellation)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(payload, json);
        var block = new byte[DataPrefix.Length + body.Length + BlockEnd.Length];
        DataPrefix.CopyTo(block, 0);
        body.CopyTo(block, DataPrefix.Length);
        BlockEnd.CopyTo(block, DataPrefix.Length + body.Length);
        await response.Body.WriteAsync(block, cancellation);
        await response.Body.FlushAsync(cancellation);
    }

    public async Task WriteKeepAliveAsync(CancellationToken cancellation)
    {
        await response.Body.WriteAsync(KeepAlive, cancellation);
        await response.Body.FlushAsync(cancellation);
    }

    public async Task WriteErrorAsync(ApiException error, CancellationToken cancellation)
    {
        await response.Body.WriteAsync(ErrorEvent, cancellation);
        await response.Body.WriteAsync(DataPrefix, cancellation);
        await response.Body.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(error.ToResponse(), OpenAiErrors.Json), cancellation);
        await response.Body.WriteAsync(BlockEnd, cancellation);
        await response.Body.FlushAsync(cancellation);
    }

    public async Task WriteDoneAsync(CancellationToken cancellation)
    {
        await response.Body.WriteAsync(Done, cancellation);
        await response.Body.FlushAsync(cancellation);
    }
}
