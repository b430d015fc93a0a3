using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;
using RecurFormer.Server.Hosting;
using RecurFormer.Engine;
using RecurFormer.Templates;
using RecurFormer.Templates.ChatTemplates;

namespace RecurFormer.Server.Errors;

/// <summary>
/// Nothing a client sends may produce HTML, an empty body, a 500 or a stack trace. Two layers make sure: an exception
/// handler that maps every known exception to an OpenAI error (and an unknown one to a bare 500 without details), and
/// status-code pages that give every body-less 4xx/5xx (unknown route, 405, 413 from Kestrel, …) the same JSON.
/// </summary>
public static class ErrorHandlingExtensions
{
    public static IApplicationBuilder UseOpenAiErrors(this IApplicationBuilder app)
    {
        app.UseExceptionHandler(new ExceptionHandlerOptions
        {
            ExceptionHandler = async context =>
            {
                var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
                var api = Translate(error, context.RequestServices.GetRequiredService<IOptions<ServerOptions>>().Value.RetryAfterSeconds);
                if (api.Status >= 500)
                {
                    context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("RecurFormer.Server.Errors")
                        .LogError(error, "Unhandled error in {Method} {Path}", context.Request.Method, context.Request.Path);
                }
                await OpenAiErrors.WriteAsync(context, api);
            },
            // Client mistakes are expected: they are not worth an error-level log with a stack trace.
            SuppressDiagnosticsCallback = context => Translate(context.Exception, retryAfterSeconds: 1).Status < 500,
        });
        app.UseStatusCodePages(async context =>
        {
            var http = context.HttpContext;
            if (!http.Response.HasStarted && http.Response.ContentLength is null or 0 && string.IsNullOrEmpty(http.Response.ContentType))
            {
                await OpenAiErrors.WriteAsync(http, OpenAiErrors.ForStatus(http));
            }
        });
        return app;
    }

    /// <summary>Known exceptions become the matching client error; anything else a 500 that says nothing about internals.</summary>
    public static ApiException Translate(Exception? error, int retryAfterSeconds) => error switch
    {
        ApiException api => api,
        BadHttpRequestException bad => FromBadRequest(bad),
        JsonException json => FromJson(json),
        EngineRequestException engine => new ApiException(400, engine.Message, engine.Param, engine.Code),
        EngineOverloadedException overloaded => new ApiException(429, overloaded.Message, null, "queue_full") { RetryAfterSeconds = retryAfterSeconds },
        EngineUnavailableException unavailable => new ApiException(503, unavailable.Message, null, "engine_unavailable") { RetryAfterSeconds = retryAfterSeconds },
        ChatTemplateNotFoundException missing => new ApiException(400, missing.Message, "messages", "chat_template_not_found"),
        ChatInputException input => new ApiException(400, input.Message, "messages", "invalid_messages"),
        TemplateException template => new ApiException(400, $"the chat template could not render these messages: {template.Message}", "messages", "chat_template_error"),
        OperationCanceledException => new ApiException(499, "The request was cancelled", null, "cancelled"),
        _ => new ApiException(500, "Internal server error", null, "internal_error"),
    };

    private static ApiException FromBadRequest(BadHttpRequestException bad)
    {
        // Minimal-API binding wraps the JSON error; Kestrel reports size limits and broken framing directly.
        if (bad.InnerException is JsonException json)
        {
            return FromJson(json);
        }
        return bad.StatusCode switch
        {
            413 => new ApiException(413, "The request body is larger than the server accepts", null, "request_too_large"),
            415 => new ApiException(415, "Content-Type must be application/json", null, "unsupported_media_type"),
            _ when bad.Message.Contains("no body was provided", StringComparison.OrdinalIgnoreCase)
                => new ApiException(400, "The request body is empty; a JSON object is required", null, "invalid_json"),
            var status => new ApiException(status is >= 400 and < 500 ? status : 400, "The request is malformed: " + bad.Message, null, "invalid_request"),
        };
    }

    private static ApiException FromJson(JsonException json)
    {
        var param = json.Path is { Length: > 2 } path ? path.TrimStart('$', '.') : null;
        var reason = json.InnerException is InvalidOperationException or FormatException or OverflowException
            ? json.InnerException.Message
            : json.Message;
        // System.Text.Json names CLR types ("System.Nullable`1[System.Int32]"); say it in JSON terms.
        if (reason.StartsWith("The JSON value could not be converted", StringComparison.Ordinal))
        {
            reason = param is null ? "a value has the wrong type" : $"'{param}' has the wrong type or is out of range";
        }
        else if (reason.StartsWith("The JSON object contains a trailing comma", StringComparison.Ordinal) || reason.Contains("is an invalid", StringComparison.Ordinal) || reason.Contains("is invalid", StringComparison.Ordinal))
        {
            reason = "the body is not valid JSON: " + FirstSentence(reason);
        }
        else
        {
            reason = FirstSentence(reason);
        }
        return new ApiException(400, param is null ? $"Invalid request body: {reason}" : $"Invalid value for '{param}': {reason}", param, "invalid_json");
    }

    private static string FirstSentence(string text)
    {
        var cut = text.IndexOf(" Path:", StringComparison.Ordinal);
        return (cut > 0 ? text[..cut] : text).Trim();
    }
}
