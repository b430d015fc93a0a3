using System.Diagnostics;

namespace RecurFormer.Model.Kernels;

/// <summary>The parts of a kernel decode step that <see cref="KernelProfile"/> times.</summary>
public enum StepPart
{
    Embedding,
    Norms,
    Projections,
    Attention,
    MambaRecurrence,
    OutputProjection,
    FeedForward,
    Head,
}

/// <summary>
/// Where a kernel decode step spends its time: thread 0 marks the end of each phase, so a part's time includes the
/// wait for the slowest thread at the barrier that ends it (what the step really pays). Costs one null check per
/// phase when no profile is attached (<see cref="CausalLM.ForwardBatch.Profile"/>). For <c>recurformer bench-step</c>.
/// </summary>
public sealed class KernelProfile
{
    private readonly long[] _ticks = new long[Enum.GetValues<StepPart>().Length];
    private long _last;

    public int Steps { get; private set; }

    internal void Start() => _last = Stopwatch.GetTimestamp();

    internal void Mark(StepPart part)
    {
        var now = Stopwatch.GetTimestamp();
        _ticks[(int)part] += now - _last;
        _last = now;
    }

    internal void EndStep() => Steps++;

    /// <summary>Mean microseconds per step of each part.</summary>
    public IReadOnlyDictionary<StepPart, double> MicrosecondsPerStep() => Enum.GetValues<StepPart>()
        .ToDictionary(part => part, part => Steps == 0 ? 0 : _ticks[(int)part] * 1e6 / Stopwatch.Frequency / Steps);
}
