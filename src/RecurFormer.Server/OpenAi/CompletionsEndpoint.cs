using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Constraints;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;

namespace RecurFormer.Server.OpenAi;

/// <summary>
/// <c>POST /v1/completions</c>: the legacy text-completion API, one engine request per prompt; <c>echo</c> with
/// <c>logprobs</c> returns the prompt's own log-probabilities too (computed in the same prefill), which is what
/// lm-evaluation-harness' loglikelihood requests read.
/// </summary>
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
        if (request.PromptLogprobs is not null && request.Stream == true)
        {
            throw ApiException.BadRequest("'prompt_logprobs' cannot be streamed (echo with logprobs can); leave out 'stream' or 'prompt_logprobs'", "prompt_logprobs");
        }
        // The prompts × n cap is checked on the JSON shape, before any prompt is tokenized.
        RequestMapping.CheckN(request.N);
        var promptCount = RequestMapping.CompletionPromptCount(request);
        if ((long)promptCount * (request.N ?? 1) > RequestMapping.MaxSequencesPerRequest)
        {
            throw ApiException.BadRequest($"{promptCount} prompts × n = {request.N ?? 1} asks for more than {RequestMapping.MaxSequencesPerRequest} completions in one request", "prompt");
        }
        var format = OutputFormat.FromRequest(request);
        var prompts = RequestMapping.CompletionPrompts(request, model);
        var samplings = prompts.Select(p => RequestMapping.CompletionSampling(request, p.Tokens.Count, model)).ToList();
        var sampling = samplings.MinBy(s => s.MaxTokens)!; // every prompt must fit: the longest prompt sets the default
        var constraint = ConstraintFactory.For(model, sampling.MaxTokens, tools: null, format);
        var shape = new CompletionShape("cmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), model, sampling,
            prompts, request.Echo == true, request.PromptLogprobs is not null);
        return await GenerationExchange.RunAsync(context, generation, model, shape.Id, prompts.Select(p => p.Tokens).ToList(), sampling, constraint, request.Stream == true,
            request.StreamOptions?.IncludeUsage == true, json.Value.SerializerOptions, shape);
    }

    private sealed class CompletionShape(string id, long created, LoadedModel model, SamplingParams sampling,
        IReadOnlyList<(IReadOnlyList<int> Tokens, string Text)> prompts, bool echo, bool vllmPromptLogprobs) : IGenerationShape
    {
        private readonly int _n = sampling.N;
        private int[] _offsets = [];
        private bool[] _echoPending = [];

        public string Id => id;

        private CompletionResponse Chunk(IReadOnlyList<CompletionChoice> choices) => new(id, "text_completion", created, model.Id, choices);

        private string Prefix(int index) => echo ? prompts[index / _n].Text : "";

        public IResult Complete(ChoiceAccumulator results)
        {
            var choices = Enumerable.Range(0, results.Count).Select(i =>
            {
                var prompt = i / _n;
                var promptLogprobs = results.PromptLogprobs(prompt);
                var logprobs = !sampling.Logprobs ? null
                    : echo ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, results.Tokens(i), 0, prompts[prompt].Tokens, promptLogprobs)
                    : ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, results.Tokens(i), 0);
                return new CompletionChoice(i, Prefix(i) + results.Text(i), logprobs, FinishReasons.Name(results.Reason(i)))
                {
                    PromptLogprobs = vllmPromptLogprobs && promptLogprobs is not null ? ChoiceAccumulator.VllmPromptLogprobs(model.Tokenizer, prompts[prompt].Tokens, promptLogprobs) : null,
                };
            }).ToList();
            return TypedResults.Ok(new CompletionResponse(id, "text_completion", created, model.Id, choices) { Usage = results.Usage() });
        }

        public async Task StartStreamAsync(SseWriter sse, int choices, CancellationToken cancellation)
        {
            _offsets = new int[choices];
            // With logprobs the echo waits for the prompt's log-probabilities (they come before the first token).
            _echoPending = Enumerable.Repeat(echo && sampling.Logprobs, choices).ToArray();
            if (echo && !sampling.Logprobs)
            {
                for (var i = 0; i < choices; i++)
                {
                    await sse.WriteAsync(Chunk([new CompletionChoice(i, Prefix(i), null, null)]), cancellation);
                }
            }
        }

        public async Task WriteEventAsync(SseWriter sse, int index, EngineEvent e, CancellationToken cancellation)
        {
            if (e is PromptLogprobsEvent prompt)
            {
                // One event per prompt (its first choice's index): every choice of that prompt echoes it.
                for (var choice = index; choice < index + _n; choice++)
                {
                    await WriteEchoAsync(sse, choice, prompt.Logprobs, cancellation);
                }
                return;
            }
            if (e is TokenEvent or FinishedEvent && _echoPending.Length > index && _echoPending[index])
            {
                await WriteEchoAsync(sse, index, null, cancellation); // no prompt logprobs came (e.g. the request was refused)
            }
            switch (e)
            {
                case TokenEvent token when token.Text.Length > 0 || sampling.Logprobs:
                    var logprobs = sampling.Logprobs ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, [(token.TokenId, token.Logprob)], _offsets[index]) : null;
                    _offsets[index] += logprobs?.Tokens[0].Length ?? 0;
                    await sse.WriteAsync(Chunk([new CompletionChoice(index, token.Text, logprobs, null)]), cancellation);
                    break;
                case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                    await sse.WriteAsync(Chunk([new CompletionChoice(index, finished.Text, null, FinishReasons.Name(finished.Reason))]), cancellation);
                    break;
            }
        }

        private async Task WriteEchoAsync(SseWriter sse, int index, IReadOnlyList<TokenLogprob?>? promptLogprobs, CancellationToken cancellation)
        {
            if (index >= _echoPending.Length || !_echoPending[index])
            {
                return;
            }
            _echoPending[index] = false;
            var logprobs = ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, [], 0, prompts[index / _n].Tokens, promptLogprobs);
            _offsets[index] = logprobs.Tokens.Sum(t => t.Length);
            await sse.WriteAsync(Chunk([new CompletionChoice(index, Prefix(index), logprobs, null)]), cancellation);
        }

        public object UsageChunk(UsageInfo usage) => Chunk([]) with { Usage = usage };
    }
}
