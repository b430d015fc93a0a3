using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.OpenAi;

public static class OpenAiEndpoints
{
    /// <summary>The OpenAI-compatible API under <c>/v1</c> (API keys and the availability gate apply to this prefix).</summary>
    public static IEndpointRouteBuilder MapOpenAiEndpoints(this IEndpointRouteBuilder routes)
    {
        var v1 = routes.MapGroup("/v1").WithTags("OpenAI");

        v1.MapPost("/chat/completions", ChatCompletionsEndpoint.Handle)
            .WithName("CreateChatCompletion")
            .WithSummary("Chat completion (OpenAI shape), streamed as server-sent events when stream is true")
            .WithDescription("Renders the messages with the checkpoint's chat template and generates. With stream=true the response is text/event-stream: a role chunk per choice, content deltas, a chunk with finish_reason, a usage chunk with choices [] when stream_options.include_usage is set, then data: [DONE].")
            .Accepts<ChatCompletionRequest>("application/json")
            .Produces<ChatCompletionResponse>(StatusCodes.Status200OK, "application/json", "text/event-stream")
            .ProducesErrors();

        v1.MapPost("/completions", CompletionsEndpoint.Handle)
            .WithName("CreateCompletion")
            .WithSummary("Text completion (legacy OpenAI shape), streamed when stream is true")
            .WithDescription("prompt may be a string, a list of strings, a list of token ids or a list of lists of token ids; choices are numbered prompt × n + choice.")
            .Accepts<CompletionRequest>("application/json")
            .Produces<CompletionResponse>(StatusCodes.Status200OK, "application/json", "text/event-stream")
            .ProducesErrors();

        v1.MapGet("/models", (ModelHost host) => TypedResults.Ok(new ModelList("list", host.Model is { } model ? [.. Cards(model)] : [])))
            .WithName("ListModels")
            .WithSummary("The served model")
            .ProducesErrors();

        // Catch-all: served model names such as "org/model" hold slashes.
        v1.MapGet("/models/{**id}", (string id, ModelHost host) => host.Model is { } model && model.Serves(id)
                ? (IResult)TypedResults.Ok(Card(model, id))
                : new ErrorResult(new ApiException(404, $"The model '{id}' does not exist", "model", "model_not_found")))
            .WithName("RetrieveModel")
            .WithSummary("One model by id")
            .Produces<ModelCard>()
            .ProducesErrors();

        return routes;
    }

    /// <summary>A card per served name (the id, then its aliases), as vLLM lists them.</summary>
    private static IEnumerable<ModelCard> Cards(LoadedModel model) => new[] { model.Id }.Concat(model.Aliases).Select(name => Card(model, name));

    /// <summary>The model's card; <c>root</c> is the checkpoint folder's name, never its path on the server's disk.</summary>
    private static ModelCard Card(LoadedModel model, string name) =>
        new(name, "model", model.LoadedAt.ToUnixTimeSeconds(), "recurformer", RootName(model.Folder), model.Engine.MaxModelLen);

    public static string RootName(string folder) =>
        Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar)) is { Length: > 0 } name ? name : "model";

    /// <summary>Documents the OpenAI error body for the statuses every /v1 endpoint may answer.</summary>
    public static RouteHandlerBuilder ProducesErrors(this RouteHandlerBuilder builder)
    {
        foreach (var status in new[] { 400, 401, 404, 413, 415, 429, 503 })
        {
            builder.Produces<ErrorResponse>(status, "application/json");
        }
        return builder;
    }
}
