using System.Diagnostics;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Where one stage-2 share of a step spent its time, in seconds: the teacher's forward (0 when the teacher cache is
/// read; a cache miss runs it within the losses), the student's forward, the losses, and the backward (with the
/// step's tensors freed). A worker's parts in distill.json's profile: stage 2 had no lasting profile, and the
/// sixteenth round timed these parts with stopwatches in a throwaway build.
/// </summary>
public readonly record struct Stage2Times(double Teacher, double Student, double Losses, double Backward);

/// <summary>The marks of one <see cref="Distiller.Stage2Backward"/>: started at construction, each part ended in order.</summary>
internal sealed class Stage2Clock
{
    private readonly long _start = Stopwatch.GetTimestamp();
    private long _teacher, _student, _losses;

    public void TeacherDone() => _teacher = Stopwatch.GetTimestamp();
    public void StudentDone() => _student = Stopwatch.GetTimestamp();
    public void LossesDone() => _losses = Stopwatch.GetTimestamp();

    /// <summary>The four parts, the backward up to now.</summary>
    public Stage2Times Times()
    {
        var end = Stopwatch.GetTimestamp();
        static double Seconds(long from, long to) => (double)(to - from) / Stopwatch.Frequency;
        return new(Seconds(_start, _teacher), Seconds(_teacher, _student), Seconds(_student, _losses), Seconds(_losses, end));
    }
}
