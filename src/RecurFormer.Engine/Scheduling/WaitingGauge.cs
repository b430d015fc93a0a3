namespace RecurFormer.Engine.Scheduling;

/// <summary>
/// Requests accepted but not yet scheduled (or closed), counted across threads: submission raises it and refuses
/// past the limit; the engine thread lowers it when a request is first scheduled or closes before that.
/// </summary>
internal sealed class WaitingGauge(int limit)
{
    private int _count;

    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _count) <= limit)
        {
            return true;
        }
        Interlocked.Decrement(ref _count);
        return false;
    }

    public void Leave() => Interlocked.Decrement(ref _count);
}
