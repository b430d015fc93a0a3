using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;

namespace RecurFormer.Server.OpenAi;

/// <summary><c>POST /v1/chat/completions</c>: render the messages with the checkpoint's chat template, generate, answer or stream.</summary>
public static class ChatCompletionsEndpoint
{
    public static async Task<IResult> Handle(ChatCompletionRequest request, HttpContext context, ModelHost host, GenerationService generation, IOptions<JsonOptions> json)
    {
        if (!host.TryGet(out var model))
        {
            throw new ApiException(503, "The model is not ready", null, "engine_unavailable") { RetryAfterSeconds = generation.Options.RetryAfterSeconds };
        }
        RequestMapping.CheckModel(request.Model, model);
        var prompt = RequestMapping.ChatPrompt(request, model);
        var sampling = RequestMapping.ChatSampling(request, prompt.Count, model);
        var outcome = new GenerationOutcome { Model = model.Id, Stream = request.Stream == true, PromptTokens = prompt.Count };
        context.Features.Set(outcome);

        var id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var aborted = context.RequestAborted;
        await using var run = generation.Start(model.Engine, id, [prompt], sampling, aborted);
        var results = new ChoiceAccumulator(1, sampling.N);

        if (request.Stream != true)
        {
            await foreach (var e in run.Events.ReadAllAsync(aborted))
            {
                results.Add(e);
            }
            Report(outcome, results);
            if (results.Error is { } error)
            {
                return new ErrorResult(error);
            }
            if (results.Aborted)
            {
                return new ErrorResult(ChoiceAccumulator.AbortError(run));
            }
            var choices = Enumerable.Range(0, results.Count).Select(i => new ChatChoice(i,
                new AssistantMessage("assistant", results.Text(i)),
                sampling.Logprobs ? new ChatLogprobs(results.Tokens(i).Where(t => t.Logprob is not null).Select(t => ChoiceAccumulator.ChatLogprob(model.Tokenizer, t.Logprob!)).ToList()) : null,
                ChoiceAccumulator.FinishReasonName(results.Reason(i)))).ToList();
            return TypedResults.Ok(new ChatCompletionResponse(id, "chat.completion", created, model.Id, choices, results.Usage()));
        }

        var sse = new SseWriter(context.Response, json.Value.SerializerOptions);
        ChatCompletionChunk Chunk(IReadOnlyList<ChatChunkChoice> choices) => new(id, "chat.completion.chunk", created, model.Id, choices);
        try
        {
            await sse.StartAsync(aborted);
            for (var choice = 0; choice < sampling.N; choice++)
            {
                await sse.WriteAsync(Chunk([new ChatChunkChoice(choice, new ChatDelta { Role = "assistant", Content = "" }, null, null)]), aborted);
            }
            await foreach (var e in run.Events.ReadWithKeepAlive(generation.Options.KeepAliveInterval, () => sse.WriteKeepAliveAsync(aborted), aborted))
            {
                results.Add(e);
                var index = results.Index(e);
                switch (e.Event)
                {
                    case TokenEvent token when token.Text.Length > 0 || token.Logprob is not null && sampling.Logprobs:
                        var logprobs = sampling.Logprobs && token.Logprob is not null ? new ChatLogprobs([ChoiceAccumulator.ChatLogprob(model.Tokenizer, token.Logprob)]) : null;
                        await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta { Content = token.Text }, logprobs, null)]), aborted);
                        break;
                    case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                        if (finished.Text.Length > 0)
                        {
                            await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta { Content = finished.Text }, null, null)]), aborted);
                        }
                        await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta(), null, ChoiceAccumulator.FinishReasonName(finished.Reason))]), aborted);
                        break;
                }
            }
            Report(outcome, results);
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
            // The client went away: disposing the run cancels the engine request and frees its cache.
            Report(outcome, results);
        }
        return TypedResults.Empty;
    }

    internal static void Report(GenerationOutcome outcome, ChoiceAccumulator results)
    {
        var usage = results.Usage();
        outcome.PromptTokens = usage.PromptTokens > 0 ? usage.PromptTokens : outcome.PromptTokens;
        outcome.CompletionTokens = usage.CompletionTokens;
        outcome.TimeToFirstTokenSeconds = results.TimeToFirstTokenSeconds;
        outcome.FinishReason = results.Error is not null ? "error"
            : Enumerable.Range(0, results.Count).Select(i => results.Reason(i)).Any(r => r is null or FinishReason.Abort) ? "abort"
            : ChoiceAccumulator.FinishReasonName(results.Reason(0));
    }
}
