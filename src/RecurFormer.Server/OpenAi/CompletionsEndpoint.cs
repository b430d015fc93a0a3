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
        if (!host.TryGet(out var model))
        {
            throw new ApiException(503, "The model is not ready", null, "engine_unavailable") { RetryAfterSeconds = generation.Options.RetryAfterSeconds };
        }
        RequestMapping.CheckModel(request.Model, model);
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
        var prompts = RequestMapping.CompletionPrompts(request, model);
        var samplings = prompts.Select(p => RequestMapping.CompletionSampling(request, p.Tokens.Count, model)).ToList();
        var sampling = samplings.MinBy(s => s.MaxTokens)!; // every prompt must fit: the longest prompt sets the default
        if (prompts.Count * sampling.N > RequestMapping.MaxSequencesPerRequest)
        {
            throw ApiException.BadRequest($"{prompts.Count} prompts × n = {sampling.N} asks for more than {RequestMapping.MaxSequencesPerRequest} completions in one request", "prompt");
        }
        var outcome = new GenerationOutcome { Model = model.Id, Stream = request.Stream == true, PromptTokens = prompts.Sum(p => p.Tokens.Count) };
        context.Features.Set(outcome);
        var echo = request.Echo == true;
        var n = sampling.N;

        var id = "cmpl-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var aborted = context.RequestAborted;
        await using var run = generation.Start(model.Engine, id, prompts.Select(p => p.Tokens).ToList(), sampling, aborted);
        var results = new ChoiceAccumulator(prompts.Count, n);

        if (request.Stream != true)
        {
            await foreach (var e in run.Events.ReadAllAsync(aborted))
            {
                results.Add(e);
            }
            ChatCompletionsEndpoint.Report(outcome, results);
            if (results.Error is { } error)
            {
                return new ErrorResult(error);
            }
            if (results.Aborted)
            {
                return new ErrorResult(ChoiceAccumulator.AbortError(run));
            }
            var choices = Enumerable.Range(0, results.Count).Select(i =>
            {
                var prefix = echo ? prompts[i / n].Text : "";
                return new CompletionChoice(i, prefix + results.Text(i),
                    sampling.Logprobs ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, results.Tokens(i), 0) : null,
                    ChoiceAccumulator.FinishReasonName(results.Reason(i)));
            }).ToList();
            return TypedResults.Ok(new CompletionResponse(id, "text_completion", created, model.Id, choices) { Usage = results.Usage() });
        }

        var sse = new SseWriter(context.Response, json.Value.SerializerOptions);
        CompletionResponse Chunk(IReadOnlyList<CompletionChoice> choices) => new(id, "text_completion", created, model.Id, choices);
        var offsets = new int[results.Count];
        try
        {
            await sse.StartAsync(aborted);
            if (echo)
            {
                for (var i = 0; i < results.Count; i++)
                {
                    await sse.WriteAsync(Chunk([new CompletionChoice(i, prompts[i / n].Text, null, null)]), aborted);
                }
            }
            await foreach (var e in run.Events.ReadWithKeepAlive(generation.Options.KeepAliveInterval, () => sse.WriteKeepAliveAsync(aborted), aborted))
            {
                results.Add(e);
                var index = results.Index(e);
                switch (e.Event)
                {
                    case TokenEvent token when token.Text.Length > 0 || sampling.Logprobs:
                        var logprobs = sampling.Logprobs ? ChoiceAccumulator.LegacyLogprobs(model.Tokenizer, [(token.TokenId, token.Logprob)], offsets[index]) : null;
                        offsets[index] += logprobs?.Tokens[0].Length ?? 0;
                        await sse.WriteAsync(Chunk([new CompletionChoice(index, token.Text, logprobs, null)]), aborted);
                        break;
                    case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                        await sse.WriteAsync(Chunk([new CompletionChoice(index, finished.Text, null, ChoiceAccumulator.FinishReasonName(finished.Reason))]), aborted);
                        break;
                }
            }
            ChatCompletionsEndpoint.Report(outcome, results);
            var failure = results.Error ?? (results.Aborted ? ChoiceAccumulator.AbortError(run) : null);
            if (failure is not null)
            {
                await sse.WriteErrorAsync(failure, aborted);
            }
            else if (request.StreamOptions?.IncludeUsage == true)
            {
                await sse.WriteAsync(Chunk([]) with { Usage = results.Usage() }, aborted);
            }
            await sse.WriteDoneAsync(aborted);
        }
        catch (Exception error) when (error is OperationCanceledException or IOException && aborted.IsCancellationRequested)
        {
            ChatCompletionsEndpoint.Report(outcome, results);
        }
        return TypedResults.Empty;
    }
}
