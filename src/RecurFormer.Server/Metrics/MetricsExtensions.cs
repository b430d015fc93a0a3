using System.Diagnostics.Metrics;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace RecurFormer.Server.Metrics;

public static class MetricsExtensions
{
    /// <summary>OpenTelemetry metrics: the serving meter, ASP.NET Core and runtime instrumentation, exported for Prometheus.</summary>
    public static IServiceCollection AddServingMetrics(this IServiceCollection services)
    {
        services.AddSingleton<ServingMetrics>();
        services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("recurformer"))
            .WithMetrics(metrics => metrics
                .AddMeter(ServingMetrics.MeterName)
                .AddAspNetCoreInstrumentation()
                .AddRuntimeInstrumentation()
                // The runtime's own names end in "_count" without being histograms, which Prometheus' lint rejects
                // (promtool check metrics); exported under names that say what they count.
                .AddView("dotnet.assembly.count", new MetricStreamConfiguration { Name = "dotnet.assemblies.loaded" })
                .AddView("dotnet.process.cpu.count", new MetricStreamConfiguration { Name = "dotnet.process.cpus" })
                .AddView("dotnet.timer.count", new MetricStreamConfiguration { Name = "dotnet.timers.active" })
                .AddPrometheusExporter()
                .OnlyThisServersMeters());
        return services;
    }

    /// <summary>
    /// A meter listener hears every meter of a name in the process. Two servers in one process (the tests) would
    /// export each other's instruments, and one stopping would end the other's series; so this provider keeps to the
    /// instruments made by this server's own meter factory, and to process-wide ones (runtime).
    /// </summary>
    private static MeterProviderBuilder OnlyThisServersMeters(this MeterProviderBuilder metrics)
    {
        if (metrics is IDeferredMeterProviderBuilder deferred)
        {
            deferred.Configure((services, builder) =>
            {
                var own = services.GetRequiredService<IMeterFactory>();
                builder.AddView(instrument => instrument.Meter.Scope is IMeterFactory other && !ReferenceEquals(other, own)
                    ? MetricStreamConfiguration.Drop
                    : null);
            });
        }
        return metrics;
    }

    public static IEndpointRouteBuilder MapServingMetrics(this IEndpointRouteBuilder routes)
    {
        routes.MapPrometheusScrapingEndpoint("/metrics");
        return routes;
    }
}
