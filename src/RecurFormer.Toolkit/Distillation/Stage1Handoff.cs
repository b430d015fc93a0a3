namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Where the workers of one stage-1 step hand each other their shares' teacher targets. A worker publishes its share's
/// targets as soon as its teacher is done and goes straight on to its mixers; a worker that has run out of its own
/// mixers and takes one of another share waits for that share's targets. The batch's reference (the pooled energy of
/// all shares' targets, each layer's loss norm) is read once the workers are done. Why: the two workers' teachers ran
/// the same work up to 39 ms apart within a step, and with a barrier after the teachers the faster worker sat out
/// the difference every step; now the mixers' work stealing (<see cref="MixerTaskQueue"/>) absorbs it
/// (docs/conversion.md, "Tenth round"; distill.json's "teacher spread"). Waits spin, yielding: a share's teacher is
/// normally done long before another worker runs out of mixers. A worker whose teacher failed releases the others
/// with its error.
/// </summary>
internal sealed class Stage1Handoff(int shares)
{
    private readonly Stage1Targets?[] _targets = new Stage1Targets?[shares];
    private int _missing = shares;
    private Dictionary<int, (double Energy, long Elements)>? _reference = shares == 0 ? [] : null;   // nothing to wait for
    private Exception? _failure;

    /// <summary>What has been published so far (for disposal: also after a failure).</summary>
    public IEnumerable<Stage1Targets> Published => _targets.OfType<Stage1Targets>();

    /// <summary>The first teacher failure reported, if any.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    public void Publish(int share, Stage1Targets targets)
    {
        Volatile.Write(ref _targets[share], targets);
        if (Interlocked.Decrement(ref _missing) == 0)
        {
            // The last publisher pools them, in share order (the interlocked decrement orders the other writes before it).
            Volatile.Write(ref _reference, Stage1Targets.Reference(_targets!));
        }
    }

    public void Fail(Exception error) => Interlocked.CompareExchange(ref _failure, error, null);

    /// <summary>A share's targets, once published.</summary>
    public Stage1Targets TargetsOf(int share) => Wait(() => Volatile.Read(ref _targets[share]));

    /// <summary>The batch's reference, once every share is published (each layer's pooled target energy, in share order).</summary>
    public IReadOnlyDictionary<int, (double Energy, long Elements)> Reference() => Wait(() => Volatile.Read(ref _reference));

    private T Wait<T>(Func<T?> read) where T : class
    {
        var spin = new SpinWait();
        while (true)
        {
            if (read() is { } value)
            {
                return value;
            }
            if (Failure is not null)
            {
                throw new OperationCanceledException("another worker's teacher failed");
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}
