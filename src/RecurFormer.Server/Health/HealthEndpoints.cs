using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.Health;

/// <summary>Ready only when the model is loaded and the engine takes requests; Kubernetes routes traffic on this.</summary>
public sealed class EngineReadyHealthCheck(ModelHost host) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (host.TryGet(out var model))
        {
            var stats = model.Engine.Stats;
            return Task.FromResult(HealthCheckResult.Healthy($"serving {model.Id}", new Dictionary<string, object>
            {
                ["running"] = stats.Running,
                ["waiting"] = stats.Waiting,
            }));
        }
        return Task.FromResult(HealthCheckResult.Unhealthy($"engine {host.State.ToString().ToLowerInvariant()}"));
    }
}

public static class HealthEndpoints
{
    public static IServiceCollection AddServingHealthChecks(this IServiceCollection services)
    {
        services.AddHealthChecks()
            .AddCheck("process", () => HealthCheckResult.Healthy("the process answers"), tags: ["live"])
            .AddCheck<EngineReadyHealthCheck>("engine", tags: ["ready"]);
        return services;
    }

    /// <summary>
    /// <c>/health/live</c> (the process answers), <c>/health/ready</c> (the model serves) and vLLM's <c>/health</c>,
    /// which probes copied from vLLM read as "the engine serves" (vLLM answers nothing until its model is loaded):
    /// the readiness check. JSON bodies, 503 when unhealthy.
    /// </summary>
    public static IEndpointRouteBuilder MapServingHealthChecks(this IEndpointRouteBuilder routes)
    {
        routes.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = r => r.Tags.Contains("live"), ResponseWriter = Write });
        routes.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = r => r.Tags.Contains("ready"), ResponseWriter = Write });
        routes.MapHealthChecks("/health", new HealthCheckOptions { Predicate = r => r.Tags.Contains("ready"), ResponseWriter = Write });
        return routes;
    }

    private static Task Write(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(JsonSerializer.Serialize(new
        {
            status = report.Status.ToString().ToLowerInvariant(),
            checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString().ToLowerInvariant(), description = e.Value.Description }),
        }));
    }
}
