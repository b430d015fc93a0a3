using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Timeout;
using RecurFormer.Engine;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Metrics;

namespace RecurFormer.Server.Generation;

/// <summary>One engine event of one prompt of an HTTP request, or the error that ended that prompt's stream.</summary>
public readonly record struct RunEvent(int Prompt, EngineEvent? Event, ApiException? Error);

/// <summary>
/// Submits engine requests for an HTTP request (one per prompt) and merges their events into one stream. The queue
/// wait of each is bounded by a Polly timeout (no retry: a retried submission would generate twice); the whole run by
/// the request timeout; and everything by the client's connection. Disposing cancels whatever is still running, so a
/// client that goes away frees its cache at the engine's next step. Records the per-request metrics.
/// </summary>
public sealed class GenerationRun : IAsyncDisposable
{
    private readonly CancellationTokenSource _cancel;
    private readonly Channel<RunEvent> _merged = Channel.CreateUnbounded<RunEvent>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _pumps;
    private readonly ResiliencePipeline _queueTimeout;
    private readonly ServingMetrics _metrics;
    private readonly int _retryAfterSeconds;
    private volatile bool _timedOut;

    private readonly string _modelName;

    private GenerationRun(CancellationTokenSource cancel, ResiliencePipeline queueTimeout, ServingMetrics metrics, IReadOnlyList<ChannelReader<EngineEvent>> readers, int retryAfterSeconds, string modelName)
    {
        _modelName = modelName;
        _retryAfterSeconds = retryAfterSeconds;
        _cancel = cancel;
        _queueTimeout = queueTimeout;
        _metrics = metrics;
        _pumps = Task.WhenAll(readers.Select((reader, index) => Pump(index, reader)))
            .ContinueWith(_ => _merged.Writer.TryComplete(), TaskScheduler.Default);
    }

    public ChannelReader<RunEvent> Events => _merged.Reader;

    /// <summary>True when the request timeout ended the run (its choices end with abort).</summary>
    public bool TimedOut => _timedOut;

    /// <summary>Submits every prompt; if one is refused, the ones already submitted are cancelled and the refusal thrown.</summary>
    public static GenerationRun Start(LLMEngine engine, string id, IReadOnlyList<IReadOnlyList<int>> prompts, SamplingParams sampling,
        Func<ITokenConstraint>? constraint, ServerOptions options, ResiliencePipeline queueTimeout, ServingMetrics metrics, string modelName, CancellationToken requestAborted)
    {
        var cancel = CancellationTokenSource.CreateLinkedTokenSource(requestAborted);
        var readers = new List<ChannelReader<EngineEvent>>();
        try
        {
            for (var i = 0; i < prompts.Count; i++)
            {
                readers.Add(engine.Submit(new GenerationRequest(prompts.Count == 1 ? id : $"{id}-{i}", prompts[i], sampling) { Constraint = constraint }, cancel.Token));
            }
        }
        catch
        {
            cancel.Cancel();
            cancel.Dispose();
            throw;
        }
        var run = new GenerationRun(cancel, queueTimeout, metrics, readers, options.RetryAfterSeconds, modelName);
        if (options.RequestTimeout > TimeSpan.Zero)
        {
            run.ArmTimeout(options.RequestTimeout);
        }
        return run;
    }

    private void ArmTimeout(TimeSpan timeout)
    {
        var timer = new CancellationTokenSource(timeout);
        timer.Token.Register(() =>
        {
            _timedOut = true;
            try
            {
                _cancel.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        });
        _ = _pumps.ContinueWith(_ => timer.Dispose(), TaskScheduler.Default);
    }

    private async Task Pump(int prompt, ChannelReader<EngineEvent> reader)
    {
        var reasons = new List<FinishReason?>();
        var failed = false;
        RequestTimings? timings = null;
        var tokens = 0;
        var completionTokens = 0;
        var lastToken = new Dictionary<int, long>();
        void Observe(EngineEvent e)
        {
            switch (e)
            {
                case TokenEvent token:
                    var now = Stopwatch.GetTimestamp();
                    if (lastToken.TryGetValue(token.Choice, out var previous))
                    {
                        _metrics.InterToken(Stopwatch.GetElapsedTime(previous, now).TotalSeconds, _modelName);
                    }
                    lastToken[token.Choice] = now;
                    tokens++;
                    break;
                case FinishedEvent finished:
                    reasons.Add(finished.Reason);
                    timings = finished.Timings;
                    completionTokens = Math.Max(completionTokens, finished.Usage.CompletionTokens);
                    break;
                case ErrorEvent:
                    failed = true;
                    break;
            }
        }

        // Queue phase: wait for admission (or an early end) within the queue timeout.
        try
        {
            await _queueTimeout.ExecuteAsync(async token =>
            {
                while (await reader.WaitToReadAsync(token))
                {
                    while (reader.TryRead(out var e))
                    {
                        Observe(e);
                        _merged.Writer.TryWrite(new RunEvent(prompt, e, null));
                        if (e is not TokenEvent)
                        {
                            return;
                        }
                    }
                }
            }, _cancel.Token);
        }
        catch (TimeoutRejectedException)
        {
            await CancelAsync();
            var busy = new ApiException(503, "The request waited too long in the queue; the server is busy, retry later", null, "queue_timeout")
            {
                RetryAfterSeconds = _retryAfterSeconds,
            };
            _merged.Writer.TryWrite(new RunEvent(prompt, null, busy));
        }
        catch (OperationCanceledException)
        {
            // Client gone or request timeout: the engine ends the request with an abort, drained below.
        }

        await foreach (var e in reader.ReadAllAsync(CancellationToken.None))
        {
            Observe(e);
            _merged.Writer.TryWrite(new RunEvent(prompt, e, null));
        }

        var reason = FinishReasons.Summarize(failed, reasons);
        // A stop token sends no token event but is still a generated token (counted in usage): it has a first-token time too.
        _metrics.RequestFinished(reason, timings, tokens > 0 || completionTokens > 0, _modelName);
    }

    private async Task CancelAsync()
    {
        try
        {
            await _cancel.CancelAsync();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await CancelAsync();
        await _pumps;
        _cancel.Dispose();
    }
}

/// <summary>Submits runs with the configured limits; the Polly pipeline is built once.</summary>
public sealed class GenerationService(IOptions<ServerOptions> options, ServingMetrics metrics)
{
    private readonly ResiliencePipeline _queueTimeout = new ResiliencePipelineBuilder()
        .AddTimeout(new TimeoutStrategyOptions { Timeout = options.Value.QueueTimeout })
        .Build();

    public ServerOptions Options => options.Value;

    public GenerationRun Start(LoadedModel model, string id, IReadOnlyList<IReadOnlyList<int>> prompts, SamplingParams sampling, Func<ITokenConstraint>? constraint, CancellationToken requestAborted)
    {
        try
        {
            return GenerationRun.Start(model.Engine, id, prompts, sampling, constraint, options.Value, _queueTimeout, metrics, model.Id, requestAborted);
        }
        catch (EngineOverloadedException overloaded)
        {
            throw new ApiException(429, overloaded.Message, null, "queue_full") { RetryAfterSeconds = options.Value.RetryAfterSeconds };
        }
        catch (EngineUnavailableException unavailable)
        {
            throw new ApiException(503, unavailable.Message, null, "engine_unavailable") { RetryAfterSeconds = options.Value.RetryAfterSeconds };
        }
        catch (EngineRequestException invalid)
        {
            throw new ApiException(400, invalid.Message, invalid.Param, invalid.Code);
        }
    }
}
