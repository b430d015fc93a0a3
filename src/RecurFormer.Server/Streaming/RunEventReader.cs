using System.Runtime.CompilerServices;
using System.Threading.Channels;
using RecurFormer.Server.Generation;

namespace RecurFormer.Server.Streaming;

public static class RunEventReader
{
    /// <summary>
    /// Reads a run's events; whenever nothing arrives for <paramref name="interval"/> (queued, long prefill) it calls
    /// <paramref name="keepAlive"/> so that proxies and clients do not time out an idle-looking stream.
    /// </summary>
    public static async IAsyncEnumerable<RunEvent> ReadWithKeepAlive(this ChannelReader<RunEvent> reader, TimeSpan interval,
        Func<Task> keepAlive, [EnumeratorCancellation] CancellationToken cancellation)
    {
        Task<bool>? pending = null;
        while (true)
        {
            pending ??= reader.WaitToReadAsync(cancellation).AsTask();
            if (!pending.IsCompleted)
            {
                try
                {
                    await pending.WaitAsync(interval, cancellation);
                }
                catch (TimeoutException)
                {
                    await keepAlive();
                    continue;
                }
            }
            if (!await pending)
            {
                yield break;
            }
            pending = null;
            while (reader.TryRead(out var item))
            {
                yield return item;
            }
        }
    }
}
