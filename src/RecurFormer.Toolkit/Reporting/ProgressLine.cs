using System.Diagnostics;

namespace RecurFormer.Toolkit.Reporting;

/// <summary>
/// A one-line progress display on stderr ("label 12/100 (3.4 s, ETA 25 s) detail"), redrawn at most a few times
/// a second; a plain line every few seconds when stderr is not a terminal, so logs stay readable.
/// </summary>
public sealed class ProgressLine(string label, int total) : IProgress<int>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly bool _terminal = !Console.IsErrorRedirected;
    private TimeSpan? _last;
    private int _resumedAt;

    public string Detail { get; set; } = "";

    /// <summary>A resumed job starts at <paramref name="done"/>: the ETA counts from the rate of this run.</summary>
    public void Resume(int done) => _resumedAt = done;

    public void Report(int done)
    {
        var now = _clock.Elapsed;
        var final = done >= total;
        var interval = _terminal ? TimeSpan.FromMilliseconds(200) : TimeSpan.FromSeconds(10);
        if (!final && _last is { } last && now - last < interval)
        {
            return;
        }
        _last = now;
        var eta = done > _resumedAt ? TimeSpan.FromSeconds(now.TotalSeconds / (done - _resumedAt) * (total - done)) : TimeSpan.Zero;
        var text = $"{label} {done}/{total} ({now.TotalSeconds:F0} s, ETA {eta.TotalSeconds:F0} s) {Detail}";
        if (_terminal)
        {
            Console.Error.Write("\r" + text.PadRight(Math.Min(Console.BufferWidth > 0 ? Console.BufferWidth - 1 : 100, 160)));
            if (final)
            {
                Console.Error.WriteLine();
            }
        }
        else
        {
            Console.Error.WriteLine(text);
        }
    }
}
