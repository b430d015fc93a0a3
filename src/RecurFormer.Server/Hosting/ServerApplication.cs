using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using RecurFormer.Server.Auth;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Health;
using RecurFormer.Server.Metrics;
using RecurFormer.Server.OpenAi;
using RecurFormer.Server.ApiDocs;
using RecurFormer.Server.CommandLine;
using RecurFormer.Server.Tokens;

namespace RecurFormer.Server.Hosting;

/// <summary>Builds the server: configuration, services, middleware order and endpoints (Program.cs and the tests use it).</summary>
public static class ServerApplication
{
    /// <summary>
    /// Builds the server from the command line (<see cref="ServerCommandLine"/>): its settings win over environment
    /// variables and appsettings.json. Settings are validated here, before the host starts, so that a mistake is one
    /// line from Program.cs rather than a host failure with a stack trace.
    /// </summary>
    /// <exception cref="CommandLineException">An unknown option or a malformed value.</exception>
    /// <exception cref="OptionsValidationException">A setting that is out of range, or a model folder that does not exist.</exception>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var arguments = ServerCommandLine.Parse(args);
        if (arguments.Errors.Count > 0)
        {
            throw new CommandLineException(string.Join("; ", arguments.Errors));
        }
        // The host reads no arguments itself: every option has been turned into a configuration key.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddInMemoryCollection(arguments.Settings);
        configure?.Invoke(builder);
        builder.Services.AddRecurFormerServer(builder.Configuration);

        var server = builder.Configuration.GetSection(ServerOptions.Section).Get<ServerOptions>() ?? new ServerOptions();
        if (string.IsNullOrEmpty(builder.Configuration["urls"]))
        {
            builder.WebHost.UseUrls($"http://{server.Host}:{server.Port}");
        }
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = SafeBodyLimit(server));
        // Draining must fit in the host's shutdown window.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = server.DrainGracePeriod + TimeSpan.FromSeconds(10));

        var app = builder.Build();
        _ = app.Services.GetRequiredService<IOptions<ServerOptions>>().Value;
        _ = app.Services.GetRequiredService<IOptions<ModelOptions>>().Value;
        _ = app.Services.GetRequiredService<IOptions<EngineSettings>>().Value;
        app.UseRecurFormerServer();
        return app;
    }

    private static long? SafeBodyLimit(ServerOptions server)
    {
        try
        {
            return server.MaxRequestBodyBytes;
        }
        catch (FormatException)
        {
            return null; // reported by options validation at start
        }
    }

    public static IServiceCollection AddRecurFormerServer(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ServerOptions>().Bind(configuration.GetSection(ServerOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<ModelOptions>().Bind(configuration.GetSection(ModelOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<EngineSettings>().Bind(configuration.GetSection(EngineSettings.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<IValidateOptions<ServerOptions>, RecurFormerOptionsValidator>();
        services.AddSingleton<IValidateOptions<ModelOptions>, RecurFormerOptionsValidator>();
        services.AddSingleton<IValidateOptions<EngineSettings>, RecurFormerOptionsValidator>();

        services.ConfigureHttpJsonOptions(options => ConfigureJson(options.SerializerOptions));
        services.Configure<Microsoft.AspNetCore.Mvc.JsonOptions>(options => ConfigureJson(options.JsonSerializerOptions));
        // Binding failures (bad JSON, wrong types, wrong content type) throw, so that the error handler can say what was wrong.
        services.Configure<RouteHandlerOptions>(options => options.ThrowOnBadRequest = true);

        services.AddSingleton<ModelHost>();
        services.AddHostedService<EngineHostedService>();
        services.AddSingleton<GenerationService>();
        services.AddSingleton<ApiKeyStore>();
        services.AddServingHealthChecks();
        services.AddServingMetrics();
        services.AddServingOpenApi();
        return services;
    }

    /// <summary>snake_case both ways, unknown fields ignored, and a nesting limit far below what could hurt the server.</summary>
    public static void ConfigureJson(JsonSerializerOptions options)
    {
        options.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        options.PropertyNameCaseInsensitive = false;
        options.MaxDepth = 32;
        options.NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.Strict;
        // Generated text goes out as written (JSON-escaped only where JSON requires it): this API serves no HTML.
        options.Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping;
    }

    public static WebApplication UseRecurFormerServer(this WebApplication app)
    {
        _ = app.Services.GetRequiredService<ServingMetrics>(); // observable instruments exist from the first scrape on
        app.UseMiddleware<RequestLoggingMiddleware>();
        app.UseOpenAiErrors();
        app.UseServingOpenApi();
        app.UseMiddleware<ApiKeyMiddleware>();
        app.UseMiddleware<AvailabilityMiddleware>();
        app.UseMiddleware<Utf8BodyMiddleware>();

        app.MapServingHealthChecks();
        app.MapServingMetrics();
        app.MapOpenAiEndpoints();
        app.MapTokenEndpoints();
        return app;
    }
}
