using System.Text.Json;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;

namespace RecurFormer.Server.OpenAi;

/// <summary>What differs between the chat and completion endpoints once their prompts and sampling are known: the shapes they write.</summary>
public interface IGenerationShape
{
    /// <summary>The non-streamed answer, from every choice's collected text.</summary>
    IResult Complete(ChoiceAccumulator results);

    /// <summary>What a stream sends right after its headers (chat: a role chunk per choice; completions: the echo).</summary>
    Task StartStreamAsync(SseWriter sse, int choices, CancellationToken cancellation);

    /// <summary>The chunk(s) for one engine event of choice <paramref name="index"/>, if any.</summary>
    Task WriteEventAsync(SseWriter sse, int index, EngineEvent e, CancellationToken cancellation);

    /// <summary>The final usage chunk (<c>choices: []</c>) of a stream that asked for it.</summary>
    object UsageChunk(UsageInfo usage);
}

/// <summary>
/// The part every generation endpoint shares: admission, collecting a non-streamed answer, the stream loop with
/// keep-alives, the failure / usage / <c>[DONE]</c> ending, a client that goes away, and the outcome for the request log.
/// </summary>
public static class GenerationExchange
{
    /// <summary>The served model, or a 503 with the configured Retry-After.</summary>
    public static LoadedModel RequireModel(ModelHost host, GenerationService generation) =>
        host.TryGet(out var model)
            ? model
            : throw new ApiException(503, "The model is not ready", null, "engine_unavailable") { RetryAfterSeconds = generation.Options.RetryAfterSeconds };

    public static async Task<IResult> RunAsync(HttpContext context, GenerationService generation, LoadedModel model, string id,
        IReadOnlyList<IReadOnlyList<int>> prompts, SamplingParams sampling, Func<ITokenConstraint>? constraint, bool stream, bool includeUsage,
        JsonSerializerOptions json, IGenerationShape shape)
    {
        var outcome = new GenerationOutcome { Model = model.Id, Stream = stream, PromptTokens = prompts.Sum(p => p.Count) };
        context.Features.Set(outcome);
        var aborted = context.RequestAborted;
        var retryAfter = generation.Options.RetryAfterSeconds;
        var results = new ChoiceAccumulator(prompts.Count, sampling.N, model.ToolMarkerTokens);
        await using var run = generation.Start(model, id, prompts, sampling, constraint, aborted);

        if (!stream)
        {
            await foreach (var e in run.Events.ReadAllAsync(aborted))
            {
                results.Add(e);
            }
            Report(outcome, results);
            return Failure(results, run, retryAfter) is { } failed ? new ErrorResult(failed) : shape.Complete(results);
        }

        var sse = new SseWriter(context.Response, json);
        try
        {
            await sse.StartAsync(aborted);
            await shape.StartStreamAsync(sse, results.Count, aborted);
            await foreach (var e in run.Events.ReadWithKeepAlive(generation.Options.KeepAliveInterval, () => sse.WriteKeepAliveAsync(aborted), aborted))
            {
                results.Add(e);
                if (e.Event is { } engineEvent)
                {
                    await shape.WriteEventAsync(sse, results.Index(e), engineEvent, aborted);
                }
            }
            Report(outcome, results);
            if (Failure(results, run, retryAfter) is { } failure)
            {
                await sse.WriteErrorAsync(failure, aborted);
            }
            else if (includeUsage)
            {
                await sse.WriteAsync(shape.UsageChunk(results.Usage()), aborted);
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

    /// <summary>Why the run did not answer: an engine error or a refusal, else an abort (timeout or shutdown) with the client still there.</summary>
    private static ApiException? Failure(ChoiceAccumulator results, GenerationRun run, int retryAfterSeconds) =>
        results.Error ?? (results.Aborted ? ChoiceAccumulator.AbortError(run, retryAfterSeconds) : null);

    private static void Report(GenerationOutcome outcome, ChoiceAccumulator results)
    {
        var usage = results.Usage();
        outcome.PromptTokens = usage.PromptTokens > 0 ? usage.PromptTokens : outcome.PromptTokens;
        outcome.CompletionTokens = usage.CompletionTokens;
        outcome.TimeToFirstTokenSeconds = results.TimeToFirstTokenSeconds;
        outcome.FinishReason = FinishReasons.Summarize(results.Error is not null, Enumerable.Range(0, results.Count).Select(results.Reason).ToList());
    }
}
