using System.Diagnostics;

namespace RecurFormer.Server.Hosting;

/// <summary>What a generation endpoint reports about a request, for the one log line written when it ends.</summary>
public sealed class GenerationOutcome
{
    public string? Model { get; set; }
    public int PromptTokens { get; set; }
    public int CompletionTokens { get; set; }
    public double? TimeToFirstTokenSeconds { get; set; }
    public string? FinishReason { get; set; }
    public bool Stream { get; set; }
}

/// <summary>
/// Gives every request an id (the client's <c>X-Request-Id</c> when it is sensible, else a new one), returns it in the
/// response, puts it in the log scope, and writes one line per request: method, path, status, duration, and for
/// generations the tokens, TTFT and finish reason.
/// </summary>
public sealed class RequestLoggingMiddleware(RequestDelegate next, ILogger<RequestLoggingMiddleware> logger)
{
    public const string Header = "X-Request-Id";

    public async Task InvokeAsync(HttpContext context)
    {
        var started = Stopwatch.GetTimestamp();
        var id = context.Request.Headers[Header].ToString();
        if (!IsSensible(id))
        {
            id = Guid.NewGuid().ToString("N");
        }
        context.TraceIdentifier = id;
        context.Response.Headers[Header] = id;
        // The exception handler and status-code pages clear the response (headers included) before they write an
        // error; setting the id again as the headers go out puts it on every response, errors too.
        context.Response.OnStarting(static state =>
        {
            var (response, requestId) = ((HttpResponse, string))state;
            response.Headers[Header] = requestId;
            return Task.CompletedTask;
        }, (context.Response, id));
        using var scope = logger.BeginScope("X-Request-Id:{XRequestId}", id);
        try
        {
            await next(context);
        }
        finally
        {
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var status = context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted ? 499 : context.Response.StatusCode;
            if (context.Features.Get<GenerationOutcome>() is { } outcome)
            {
                logger.LogInformation("{Method} {Path} {Status} in {DurationMs:F1} ms: model={Model} stream={Stream} prompt_tokens={PromptTokens} completion_tokens={CompletionTokens} ttft_ms={TtftMs:F1} finish_reason={FinishReason}",
                    context.Request.Method, context.Request.Path.Value, status, seconds * 1000, outcome.Model, outcome.Stream, outcome.PromptTokens, outcome.CompletionTokens,
                    (outcome.TimeToFirstTokenSeconds ?? double.NaN) * 1000, outcome.FinishReason);
            }
            else if (!context.Request.Path.StartsWithSegments("/metrics") && !context.Request.Path.StartsWithSegments("/health"))
            {
                logger.LogInformation("{Method} {Path} {Status} in {DurationMs:F1} ms", context.Request.Method, context.Request.Path.Value, status, seconds * 1000);
            }
        }
    }

    /// <summary>Ids end up in logs and headers: short, printable ASCII only.</summary>
    private static bool IsSensible(string id) =>
        id.Length is > 0 and <= 128 && id.All(c => c is > ' ' and < (char)127);
}
