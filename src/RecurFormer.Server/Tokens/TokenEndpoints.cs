using Microsoft.Extensions.Options;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.OpenAi;

namespace RecurFormer.Server.Tokens;

/// <summary>vLLM's <c>/tokenize</c> request: a prompt, or chat messages rendered with the chat template.</summary>
public sealed class TokenizeRequest
{
    public string? Model { get; set; }
    public string? Prompt { get; set; }
    public List<ChatMessage>? Messages { get; set; }
    public bool? AddSpecialTokens { get; set; }
}

public sealed record TokenizeResponse(int Count, int MaxModelLen, IReadOnlyList<int> Tokens);

public sealed class DetokenizeRequest
{
    public string? Model { get; set; }
    public List<int>? Tokens { get; set; }
}

public sealed record DetokenizeResponse(string Prompt);

public sealed record VersionResponse(string Version);

/// <summary>vLLM's tokenizer endpoints and <c>/version</c>; unauthenticated, like vLLM's.</summary>
public static class TokenEndpoints
{
    public static IEndpointRouteBuilder MapTokenEndpoints(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("").WithTags("Tokenizer");
        group.MapPost("/tokenize", Tokenize)
            .WithSummary("Token ids of a prompt, or of chat messages rendered with the chat template (vLLM shape)")
            .Accepts<TokenizeRequest>("application/json")
            .Produces<TokenizeResponse>()
            .ProducesErrors();
        group.MapPost("/detokenize", Detokenize)
            .WithSummary("Text of token ids (vLLM shape)")
            .Accepts<DetokenizeRequest>("application/json")
            .Produces<DetokenizeResponse>()
            .ProducesErrors();
        group.MapGet("/version", () => TypedResults.Ok(new VersionResponse(Version)))
            .WithSummary("Server version");
        return routes;
    }

    public static string Version { get; } =
        typeof(TokenEndpoints).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    private static LoadedModel Ready(ModelHost host, ServerOptions options, string? requested)
    {
        if (!host.TryGet(out var model))
        {
            throw new ApiException(503, "The model is not ready", null, "engine_unavailable") { RetryAfterSeconds = options.RetryAfterSeconds };
        }
        RequestMapping.CheckModel(requested, model);
        return model;
    }

    private static IResult Tokenize(TokenizeRequest request, ModelHost host, IOptions<ServerOptions> options)
    {
        var model = Ready(host, options.Value, request.Model);
        IReadOnlyList<int> tokens;
        if (request.Messages is not null)
        {
            if (request.Prompt is not null)
            {
                throw ApiException.BadRequest("give either 'prompt' or 'messages', not both", "messages");
            }
            tokens = RequestMapping.ChatPrompt(new ChatCompletionRequest { Messages = request.Messages }, model);
        }
        else if (request.Prompt is not null)
        {
            RequestMapping.CheckTextLength(request.Prompt.Length, model, "prompt");
            tokens = request.AddSpecialTokens == false ? model.Tokenizer.Encode(request.Prompt, addBosToken: false) : model.Tokenizer.Encode(request.Prompt);
        }
        else
        {
            throw ApiException.BadRequest("'prompt' or 'messages' is required", "prompt");
        }
        return TypedResults.Ok(new TokenizeResponse(tokens.Count, model.Engine.MaxModelLen, tokens));
    }

    private static IResult Detokenize(DetokenizeRequest request, ModelHost host, IOptions<ServerOptions> options)
    {
        var model = Ready(host, options.Value, request.Model);
        if (request.Tokens is null)
        {
            throw ApiException.BadRequest("'tokens' is required", "tokens");
        }
        foreach (var id in request.Tokens)
        {
            if (!model.Tokenizer.IsValidTokenId(id))
            {
                throw ApiException.BadRequest($"token id {id} is outside the vocabulary (0..{model.Tokenizer.VocabSize - 1})", "tokens");
            }
        }
        return TypedResults.Ok(new DetokenizeResponse(model.Tokenizer.Decode(request.Tokens)));
    }

}
