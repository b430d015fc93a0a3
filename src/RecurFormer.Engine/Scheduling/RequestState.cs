using System.Diagnostics;
using System.Threading.Channels;
using RecurFormer.Engine.Requests;

namespace RecurFormer.Engine.Scheduling;

/// <summary>A request inside the engine: its choices, its event channel, cancellation and timings.</summary>
internal sealed class RequestState
{
    private readonly Channel<EngineEvent> _events = Channel.CreateUnbounded<EngineEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private int _cancelled;

    public RequestState(GenerationRequest request, IReadOnlySet<int> stopTokenIds)
    {
        Request = request;
        StopTokenIds = stopTokenIds;
        ArrivedAt = Stopwatch.GetTimestamp();
    }

    public GenerationRequest Request { get; }

    /// <summary>Token ids that end a choice: eos (unless ignore_eos) and stop_token_ids.</summary>
    public IReadOnlySet<int> StopTokenIds { get; }

    public List<Sequence> Sequences { get; } = [];
    public ChannelReader<EngineEvent> Events => _events.Reader;

    public long ArrivedAt { get; }
    public long? ScheduledAt { get; set; }
    public long? FirstTokenAt { get; set; }
    public int CompletionTokens { get; set; }
    public int FinishedChoices { get; set; }
    public bool Done { get; private set; }

    /// <summary>The parent's choices beyond the first are forked once its prefill is done.</summary>
    public bool Forked { get; set; }

    /// <summary>The request's hook on the caller's CancellationToken, removed when the request closes.</summary>
    public CancellationTokenRegistration CancellationRegistration { get; set; }

    public bool IsCancelled => Volatile.Read(ref _cancelled) == 1;
    public void Cancel() => Interlocked.Exchange(ref _cancelled, 1);

    public void Emit(EngineEvent engineEvent) => _events.Writer.TryWrite(engineEvent);

    public void Complete()
    {
        Done = true;
        _events.Writer.TryComplete();
    }

    public RequestTimings Timings()
    {
        var now = Stopwatch.GetTimestamp();
        return new RequestTimings(
            Stopwatch.GetElapsedTime(ArrivedAt, ScheduledAt ?? now).TotalSeconds,
            Stopwatch.GetElapsedTime(ArrivedAt, FirstTokenAt ?? now).TotalSeconds,
            Stopwatch.GetElapsedTime(ArrivedAt, now).TotalSeconds);
    }
}
