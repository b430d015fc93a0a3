using System.Text.Json.Nodes;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace RecurFormer.Server.ApiDocs;

public static class OpenApiExtensions
{
    /// <summary>The Swashbuckle document (snake_case schemas, request and response examples) for every endpoint.</summary>
    public static IServiceCollection AddServingOpenApi(this IServiceCollection services)
    {
        services.AddEndpointsApiExplorer();
        services.AddSwaggerGen(options =>
        {
            options.SwaggerDoc("v1", new OpenApiInfo
            {
                Title = "RecurFormer",
                Version = "v1",
                Description = "OpenAI-compatible API over a hybrid attention/Mamba LLM. Errors are {\"error\":{\"message\",\"type\",\"param\",\"code\"}}. /v1/* needs 'Authorization: Bearer KEY' when API keys are configured.",
            });
            options.AddSecurityDefinition("bearer", new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = "An API key from RecurFormer:ApiKeys or RecurFormer:ApiKeyFile.",
            });
            options.OperationFilter<ExamplesOperationFilter>();
            options.SchemaFilter<OpenObjectsSchemaFilter>();
            options.DocumentFilter<OperationsDocumentFilter>();
        });
        return services;
    }

    /// <summary>The document at <c>/openapi/v1.json</c> and the UI at <c>/docs</c>.</summary>
    public static IApplicationBuilder UseServingOpenApi(this IApplicationBuilder app)
    {
        app.UseSwagger(options => options.RouteTemplate = "openapi/{documentName}.json");
        app.UseSwaggerUI(options =>
        {
            options.RoutePrefix = "docs";
            options.SwaggerEndpoint("/openapi/v1.json", "RecurFormer v1");
            options.DocumentTitle = "RecurFormer API";
        });
        return app;
    }
}

/// <summary>Request and response examples by operation, so that /docs shows a working request for each endpoint.</summary>
internal sealed class ExamplesOperationFilter : IOperationFilter
{
    private const string Chat = """
        {"model":"dotnet-docs-qwen2-16m","messages":[{"role":"system","content":"You are a concise assistant that explains .NET APIs."},{"role":"user","content":"Explain System.Threading.CancellationToken.Equals."}],"temperature":0,"max_tokens":64,"stream":false}
        """;
    private const string ChatResponse = """
        {"id":"chatcmpl-0f1e2d3c","object":"chat.completion","created":1767225600,"model":"dotnet-docs-qwen2-16m","choices":[{"index":0,"message":{"role":"assistant","content":"Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":35,"completion_tokens":24,"total_tokens":59}}
        """;
    private const string Completion = """
        {"model":"dotnet-docs-qwen2-16m","prompt":"System.Threading.CancellationToken","max_tokens":16,"temperature":0}
        """;
    private const string CompletionResponse = """
        {"id":"cmpl-0f1e2d3c","object":"text_completion","created":1767225600,"model":"dotnet-docs-qwen2-16m","choices":[{"index":0,"text":" propagates notification that operations should be canceled.","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":6,"completion_tokens":16,"total_tokens":22}}
        """;
    private const string Models = """
        {"object":"list","data":[{"id":"dotnet-docs-qwen2-16m","object":"model","created":1767225600,"owned_by":"recurformer","root":"dotnet-docs-qwen2-16m","max_model_len":2048}]}
        """;
    private const string Tokenize = """{"prompt":"Hello world"}""";
    private const string TokenizeResponse = """{"count":2,"max_model_len":2048,"tokens":[9707,1879]}""";
    private const string Detokenize = """{"tokens":[9707,1879]}""";
    private const string DetokenizeResponse = """{"prompt":"Hello world"}""";
    private const string Error = """{"error":{"message":"'n' must be between 1 and 128, got 0","type":"invalid_request_error","param":"n","code":"invalid_request"}}""";

    public void Apply(OpenApiOperation operation, OperationFilterContext context)
    {
        var path = "/" + context.ApiDescription.RelativePath?.TrimEnd('/');
        var (request, response) = path switch
        {
            "/v1/chat/completions" => (Chat, ChatResponse),
            "/v1/completions" => (Completion, CompletionResponse),
            "/v1/models" => (null, Models),
            "/tokenize" => (Tokenize, TokenizeResponse),
            "/detokenize" => (Detokenize, DetokenizeResponse),
            _ => ((string?)null, (string?)null),
        };
        if (request is not null && operation.RequestBody?.Content is { } requestContent && requestContent.TryGetValue("application/json", out var requestMedia) && requestMedia is OpenApiMediaType requestType)
        {
            requestType.Example = JsonNode.Parse(request);
        }
        if (operation.Responses is null)
        {
            return;
        }
        foreach (var (status, body) in operation.Responses)
        {
            if (body.Content is null || !body.Content.TryGetValue("application/json", out var media) || media is not OpenApiMediaType json)
            {
                continue;
            }
            if (status == "200" && response is not null)
            {
                json.Example = JsonNode.Parse(response);
            }
            else if (status.StartsWith('4') || status.StartsWith('5'))
            {
                json.Example = JsonNode.Parse(Error);
            }
        }
        if (path.StartsWith("/v1/", StringComparison.Ordinal))
        {
            operation.Security ??= [];
            operation.Security.Add(new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference("bearer", context.Document)] = [] });
        }
    }
}

/// <summary>
/// The server ignores fields it does not know (clients send newer OpenAI fields), so no schema may tell generators
/// and validators that other properties are forbidden.
/// </summary>
internal sealed class OpenObjectsSchemaFilter : ISchemaFilter
{
    public void Apply(IOpenApiSchema schema, SchemaFilterContext context)
    {
        if (schema is OpenApiSchema concrete && concrete.Properties is { Count: > 0 } && concrete.AdditionalProperties is null)
        {
            concrete.AdditionalPropertiesAllowed = true;
        }
    }
}

/// <summary>The health probes and the Prometheus scrape endpoint are not minimal-API handlers; they are described here.</summary>
internal sealed class OperationsDocumentFilter : IDocumentFilter
{
    public void Apply(OpenApiDocument document, DocumentFilterContext context)
    {
        document.Paths ??= [];
        Add(document, "/health/live", "Liveness: 200 while the process answers", "application/json", """{"status":"healthy","checks":{"process":{"status":"healthy","description":"the process answers"}}}""", unhealthy: false);
        Add(document, "/health/ready", "Readiness: 200 when the model is loaded and the engine runs, else 503", "application/json", """{"status":"healthy","checks":{"engine":{"status":"healthy","description":"serving dotnet-docs-qwen2-16m"}}}""", unhealthy: true);
        Add(document, "/health", "vLLM's health probe: the same as /health/ready", "application/json", """{"status":"healthy","checks":{"engine":{"status":"healthy","description":"serving dotnet-docs-qwen2-16m"}}}""", unhealthy: true);
        Add(document, "/metrics", "Prometheus metrics (text exposition format): recurformer_* serving and cache metrics, ASP.NET Core and runtime metrics", "text/plain", null, unhealthy: false);
    }

    private static void Add(OpenApiDocument document, string path, string summary, string mediaType, string? example, bool unhealthy)
    {
        if (document.Paths.ContainsKey(path))
        {
            return;
        }
        var responses = new OpenApiResponses
        {
            ["200"] = new OpenApiResponse
            {
                Description = "OK",
                Content = new Dictionary<string, IOpenApiMediaType> { [mediaType] = new OpenApiMediaType { Example = example is null ? null : JsonNode.Parse(example) } },
            },
        };
        if (unhealthy)
        {
            responses["503"] = new OpenApiResponse
            {
                Description = "Not ready (starting, draining or failed)",
                Content = new Dictionary<string, IOpenApiMediaType> { [mediaType] = new OpenApiMediaType() },
            };
        }
        document.Paths.Add(path, new OpenApiPathItem
        {
            Operations = new Dictionary<HttpMethod, OpenApiOperation>
            {
                [HttpMethod.Get] = new OpenApiOperation { Summary = summary, Tags = new HashSet<OpenApiTagReference> { new("Operations", document) }, Responses = responses },
            },
        });
    }
}
