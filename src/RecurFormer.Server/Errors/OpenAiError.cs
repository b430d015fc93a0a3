using System.Text.Json;
using System.Text.Json.Serialization;

namespace RecurFormer.Server.Errors;

/// <summary>The body of every error response: <c>{"error":{"message","type","param","code"}}</c>, as OpenAI and vLLM send it.</summary>
public sealed record ErrorResponse(ErrorDetail Error);

public sealed record ErrorDetail(
    string Message,
    string Type,
    string? Param,
    string? Code);

/// <summary>
/// A client mistake (or a refusal such as 429/503) that ends a request: thrown from anywhere in request handling and
/// written by the error middleware, or returned directly as a result.
/// </summary>
public sealed class ApiException(int status, string message, string? param = null, string? code = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type ?? OpenAiErrors.TypeFor(status);

    /// <summary>Seconds for <c>Retry-After</c>, on 429 and 503.</summary>
    public int? RetryAfterSeconds { get; init; }

    public ErrorResponse ToResponse() => new(new ErrorDetail(Message, Type, Param, Code));

    public static ApiException BadRequest(string message, string? param = null, string code = "invalid_request") => new(400, message, param, code);
}

/// <summary>Writes OpenAI error JSON; shared by the exception handler, status-code pages and endpoints.</summary>
public static class OpenAiErrors
{
    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        // Messages quote the client's input; HTML-safe escaping would only make them unreadable (this is not HTML).
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static string TypeFor(int status) => status switch
    {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    /// <summary>The message and code for a status that has no more specific explanation (unknown route, 405, …).</summary>
    public static ApiException ForStatus(HttpContext context) => context.Response.StatusCode switch
    {
        404 => new ApiException(404, $"No route matches {context.Request.Method} {context.Request.Path}", null, "not_found"),
        405 => new ApiException(405, $"Method {context.Request.Method} is not allowed on {context.Request.Path}", null, "method_not_allowed"),
        413 => new ApiException(413, "The request body is too large", null, "request_too_large"),
        415 => new ApiException(415, "Content-Type must be application/json", null, "unsupported_media_type"),
        401 => new ApiException(401, "Missing or invalid API key", null, "invalid_api_key"),
        var status => new ApiException(status, $"The request failed with status {status}", null, status >= 500 ? "internal_error" : "invalid_request"),
    };

    public static async Task WriteAsync(HttpContext context, ApiException error)
    {
        var response = context.Response;
        response.StatusCode = error.Status;
        response.ContentType = "application/json";
        if (error.RetryAfterSeconds is { } seconds)
        {
            response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        // Errors are small: no need to stream, and a complete body keeps clients that read Content-Length happy.
        var bytes = JsonSerializer.SerializeToUtf8Bytes(error.ToResponse(), Json);
        response.ContentLength = bytes.Length;
        await response.Body.WriteAsync(bytes, context.RequestAborted);
    }
}

/// <summary>An endpoint result that writes the OpenAI error JSON.</summary>
public sealed class ErrorResult(ApiException error) : IResult, IStatusCodeHttpResult
{
    public ApiException Error { get; } = error;
    public int? StatusCode => Error.Status;
    public Task ExecuteAsync(HttpContext httpContext) => OpenAiErrors.WriteAsync(httpContext, Error);
}
