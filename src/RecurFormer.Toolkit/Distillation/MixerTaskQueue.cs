namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Who runs which of stage 1's mixer tasks, one per (share of the batch, replaced layer): each worker takes its own
/// share's layers front to back, and a worker that has run out takes the last untaken layer of the share with the
/// most left. Why: the workers' cores do not run at the same speed (one was 10–40% slower in some runs, whatever the
/// code: docs/conversion.md), and a step waits for the slowest worker; the layers of a share are independent once
/// its teacher targets exist. A task always runs on its share's student, whoever runs it, so each gradient is still
/// computed once for the same replica (added to it after the workers, then summed in worker order): the result does
/// not depend on who took what (the workers' kernel teams are all of one size, so the kernels' per-thread sums split
/// the same way whoever runs them).
/// </summary>
internal sealed class MixerTaskQueue
{
    private readonly int[] _next;      // per share: the next layer its own worker takes
    private readonly int[] _end;       // per share: one past the last layer nobody has taken
    private readonly Lock _lock = new();

    public MixerTaskQueue(int shares, int layers)
    {
        _next = new int[shares];
        _end = Enumerable.Repeat(layers, shares).ToArray();
    }

    /// <summary>The next task for <paramref name="worker"/> (share, layer position), or false when none is left.</summary>
    public bool TryTake(int worker, out int share, out int layer)
    {
        using var _ = _lock.EnterScope();
        if (_next[worker] < _end[worker])
        {
            (share, layer) = (worker, _next[worker]++);
            return true;
        }
        share = -1;
        for (var s = 0; s < _next.Length; s++)
        {
            if (_end[s] - _next[s] > 0 && (share < 0 || _end[s] - _next[s] > _end[share] - _next[share]))
            {
                share = s;
            }
        }
        layer = share < 0 ? -1 : --_end[share];
        return share >= 0;
    }
}
