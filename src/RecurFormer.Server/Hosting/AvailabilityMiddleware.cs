using Microsoft.Extensions.Options;
using RecurFormer.Server.Errors;

namespace RecurFormer.Server.Hosting;

/// <summary>While the model loads or the server drains, <c>/v1/*</c> answers 503 with Retry-After instead of queueing work.</summary>
public sealed class AvailabilityMiddleware(RequestDelegate next, ModelHost host, IOptions<ServerOptions> options)
{
    public Task InvokeAsync(HttpContext context)
    {
        if (!context.Request.Path.StartsWithSegments("/v1") || host.TryGet(out _))
        {
            return next(context);
        }
        var message = host.State switch
        {
            ServingState.Starting => "The model is still loading; retry shortly",
            ServingState.Failed => "The model failed to load",
            _ => "The server is shutting down and takes no new requests",
        };
        return OpenAiErrors.WriteAsync(context, new ApiException(503, message, null, "engine_unavailable") { RetryAfterSeconds = options.Value.RetryAfterSeconds });
    }
}
