using System.Diagnostics;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>When one benchmark request was sent and when each of its tokens arrived (Stopwatch timestamps).</summary>
public sealed class RequestMeasurement
{
    public long SentAt { get; } = Stopwatch.GetTimestamp();
    public List<long> TokenTimes { get; } = [];

    /// <summary>The generated token ids (what a conversation's next turn carries on), when the target reports them.</summary>
    public List<int> TokenIds { get; } = [];
    public long? FinishedAt { get; set; }

    public void TokenArrived() => TokenTimes.Add(Stopwatch.GetTimestamp());

    public double? TimeToFirstToken => TokenTimes.Count == 0 ? null : Seconds(SentAt, TokenTimes[0]);

    public IEnumerable<double> InterTokenLatencies => TokenTimes.Zip(TokenTimes.Skip(1), Seconds);

    public static double Seconds(long from, long to) => (to - from) / (double)Stopwatch.Frequency;
}

/// <summary>Sends one request of the given prompt ids and max tokens (ignoring eos), recording token arrivals.</summary>
public interface IBenchTarget
{
    string Name { get; }
    Task<RequestMeasurement> Run(int[] promptIds, int maxTokens, CancellationToken cancellation);
}
