using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;

namespace RecurFormer.Server.OpenAi;

/// <summary><c>POST /v1/completions</c>: the legacy text-completion API, one engine request per prompt.</summary>
public static class CompletionsEndpoint
{
    public static async Task<IResult> Handle(CompletionRequest request, HttpContext context, ModelHost host, GenerationService generation, IOptions<JsonOptions> json)
    {
        var model = GenerationExchange.RequireModel(host, generation);
        RequestMapping.CheckModel(request.Model, model);
        RequestMapping.CheckStreamOptions(request.Stream, request.StreamOptions);
        if (request.Suffix is { Length: > 0 })
        {
            throw ApiException.BadRequest("'suffix' is not supported", "suffix");
        }
        if (request.BestOf is { } bestOf && bestOf != (request.N ?? 1))
        {
            throw ApiException.BadRequest("'best_of' is not supported (leave it out or set it equal to 'n')", "best_of");
        }
        if (request.Echo == true && request.Logprobs is not null)
        {
            throw ApiException.BadRequest("'echo' together with 'logprobs' is not supported (prompt logprobs are not computed)", "echo");
        }
        // The prompts × n cap is checked on the JSON shape, before any prompt is tokenized.
        RequestMapping.CheckN(request.N);
        var promptCount = RequestMapping.CompletionPromptCount(request);
        if ((long)promptCount * (request.N ?? 1) > RequestMapping.MaxSequencesPerRequest)
        {
            throw ApiException.BadRequest($"{promptCount} prompts × n = {request.N ?? 1} asks for more than {RequestMapping.MaxSequencesPerRequest} completions in one request", "prompt");
        }
        var prompts = RequestMapping.CompletionPrompts(request, model);
        var samplings = prompts.Select(p => RequestMapping.CompletionSampling(request, p.Tokens.Count, model)).ToList();
        var sampling = samplings.MinBy(s => s.MaxTokens)!; // every prompt must fit: the longest prompt sets the default
        var shape = new CompletionShape("cmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), model, sampling,
            prompts.Select(p => p.Text).ToList(), request.Echo == true);
        return await GenerationExchange.RunAsync(context, generation, model, shape.Id, prompts.Select(p => p.Tokens).ToList(), sampling, request.Stream == true,
            request.StreamOptions?.IncludeUsage == true, json.Value.SerializerOptions, shape);
    }

    private sealed class CompletionShape(string id, long created, LoadedModel model, SamplingParams sampling, IReadOnlyList<string> promptTexts, bool echo) : IGenerationShape
    {
        private readonly int _n = sampling.N;
        private int[] _offsets = [];

        public string Id => id;

        private CompletionResponse Chunk(IReadOnlyList<CompletionChoice> choices) => new(id, "text_completion", created, model.Id, choices);

        private string Prefix(int index) => echo ? promptTexts[index / _n] : "";

        public IResult Complete(ChoiceAccumulator results)
        {
            var choices = Enumerable.Range(0, results.Count).Select(i => new CompletionChoice(i, Prefix(i) + results.Text(i),
                sampling.Logprobs ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, results.Tokens(i), 0) : null,
                ChoiceAccumulator.FinishReasonName(results.Reason(i)))).ToList();
            return TypedResults.Ok(new CompletionResponse(id, "text_completion", created, model.Id, choices) { Usage = results.Usage() });
        }

        public async Task StartStreamAsync(SseWriter sse, int choices, CancellationToken cancellation)
        {
            _offsets = new int[choices];
            if (echo)
            {
                for (var i = 0; i < choices; i++)
                {
                    await sse.WriteAsync(Chunk([new CompletionChoice(i, Prefix(i), null, null)]), cancellation);
                }
            }
        }

        public async Task WriteEventAsync(SseWriter sse, int index, EngineEvent e, CancellationToken cancellation)
        {
            switch (e)
            {
                case TokenEvent token when token.Text.Length > 0 || sampling.Logprobs:
                    var logprobs = sampling.Logprobs ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, [(token.TokenId, token.Logprob)], _offsets[index]) : null;
                    _offsets[index] += logprobs?.Tokens[0].Length ?? 0;
                    await sse.WriteAsync(Chunk([new CompletionChoice(index, token.Text, logprobs, null)]), cancellation);
                    break;
                case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                    await sse.WriteAsync(Chunk([new CompletionChoice(index, finished.Text, null, ChoiceAccumulator.FinishReasonName(finished.Reason))]), cancellation);
                    break;
            }
        }

        public object UsageChunk(UsageInfo usage) => Chunk([]) with { Usage = usage };
    }
}
