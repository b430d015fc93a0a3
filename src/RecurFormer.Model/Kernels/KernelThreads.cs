using System.Runtime.CompilerServices;
namespace RecurFormer.Model.Kernels;

/// <summary>
/// The threads that run the hand-written CPU kernels, llama.cpp style: every thread runs the same step function
/// with its own index ("thread i of n" takes its share of each operation) and all meet at <see cref="Barrier"/>
/// between operations that depend on each other. The caller is thread 0, so one decode step costs one hand-off.
/// Waiting is a short spin (a decode step's operations are microseconds apart) that falls back to blocking, so an
/// idle engine leaves the cores to the web server; the spin yields, never sleeps, so a thread the OS preempted
/// does not stall the others for a whole time slice.
/// </summary>
public sealed class KernelThreads : IDisposable
{
    /// <summary>How long an idle worker keeps spinning for the next step before it blocks (the engine's bookkeeping between steps).</summary>
    private static readonly long IdleSpinTicks = System.Diagnostics.Stopwatch.Frequency / 5_000; // 200 µs

    private readonly Thread[] _workers;
    private readonly SemaphoreSlim[] _wake;
    private readonly int[] _sleeping;
    private readonly Lock _oneStepAtATime = new();
    private Action<int>? _body;
    private int _generation;
    private int _pending;
    private int _barrierArrived;
    private int _barrierGeneration;
    private volatile bool _stopping;
    private volatile bool _broken;
    private Exception? _failure;

    public KernelThreads(int threads)
    {
        Count = Math.Max(1, threads);
        _workers = new Thread[Count - 1];
        _wake = new SemaphoreSlim[Count - 1];
        _sleeping = new int[Count - 1];
        for (var i = 0; i < _workers.Length; i++)
        {
            var index = i + 1;
            _wake[i] = new SemaphoreSlim(0);
            _workers[i] = new Thread(() => Work(index)) { IsBackground = true, Name = $"recurformer-kernel-{index}" };
            _workers[i].Start();
        }
    }

    /// <summary>Threads that run a step, the caller included.</summary>
    public int Count { get; }

    /// <summary>A team of one: runs everything on the calling thread.</summary>
    public static KernelThreads Single { get; } = new(1);

    private static readonly Lazy<KernelThreads> ProcessTeam = new(() => new KernelThreads(TorchSharp.torch.get_num_threads()));

    /// <summary>
    /// The team of a process that runs no engine (the CLI, the toolkit, tests): as many threads as libtorch was given
    /// (--threads), created on first use. The engine brings its own.
    /// </summary>
    public static KernelThreads ForThisProcess => ProcessTeam.Value;

    /// <summary>
    /// Gives every thread of the team (the caller included) its own libtorch thread count. OpenMP's count is per OS
    /// thread: a team thread that has not set it runs oneDNN's products over every core, against the other threads'
    /// work (1.8× slower per product, measured by bench-products); libtorch sets it lazily only on its own parallel
    /// paths. For teams whose threads each run libtorch operations of their own (distill's workers).
    /// </summary>
    public void SetLibTorchThreads(int count) => Run(_ => TorchSharp.torch.set_num_threads(count));

    /// <summary>
    /// Runs <paramref name="body"/>(i) on every thread i (the caller is 0) and returns when all are done. Callers on
    /// different threads take turns: the process-wide team is shared by every model in the process (tests run many).
    /// </summary>
    public void Run(Action<int> body)
    {
        if (Count == 1)
        {
            body(0);
            return;
        }
        lock (_oneStepAtATime)
        {
            RunStep(body);
        }
    }

    private void RunStep(Action<int> body)
    {
        _failure = null;
        _broken = false;
        _barrierArrived = 0; // a failed step may have left threads counted at a barrier
        _body = body;
        Volatile.Write(ref _pending, Count - 1);
        Interlocked.Increment(ref _generation);
        for (var i = 0; i < _workers.Length; i++)
        {
            if (Volatile.Read(ref _sleeping[i]) == 1)
            {
                _wake[i].Release();
            }
        }
        Execute(body, 0);
        var spin = new SpinWait();
        while (Volatile.Read(ref _pending) > 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }
        _body = null;
        if (_failure is { } failure)
        {
            throw new KernelThreadException(failure);
        }
    }

    /// <summary>Waits until every thread of the step has arrived here.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Barrier()
    {
        if (Count == 1)
        {
            return;
        }
        var generation = Volatile.Read(ref _barrierGeneration);
        if (Interlocked.Increment(ref _barrierArrived) == Count)
        {
            Volatile.Write(ref _barrierArrived, 0);
            Interlocked.Increment(ref _barrierGeneration);
            return;
        }
        var spin = new SpinWait();
        while (Volatile.Read(ref _barrierGeneration) == generation)
        {
            if (_broken)
            {
                throw new OperationCanceledException("another kernel thread failed");
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>The share of <paramref name="count"/> items that thread <paramref name="thread"/> takes, in multiples of <paramref name="align"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public (int Start, int End) Share(int thread, int count, int align = 1)
    {
        var units = (count + align - 1) / align;
        var start = (int)((long)units * thread / Count) * align;
        var end = (int)((long)units * (thread + 1) / Count) * align;
        return (Math.Min(start, count), Math.Min(end, count));
    }

    private void Execute(Action<int> body, int thread)
    {
        try
        {
            body(thread);
        }
        catch (OperationCanceledException) when (_broken)
        {
            // Another thread failed first; its exception is the one reported.
        }
        catch (Exception error)
        {
            Interlocked.CompareExchange(ref _failure, error, null);
            _broken = true;
        }
    }

    private void Work(int index)
    {
        var seen = 0;
        while (true)
        {
            WaitForStep(index, seen);
            if (_stopping)
            {
                return;
            }
            seen = Volatile.Read(ref _generation);
            Execute(_body!, index);
            Interlocked.Decrement(ref _pending);
        }
    }

    private void WaitForStep(int index, int seen)
    {
        var deadline = System.Diagnostics.Stopwatch.GetTimestamp() + IdleSpinTicks;
        var spin = new SpinWait();
        while (Volatile.Read(ref _generation) == seen && !_stopping)
        {
            if (System.Diagnostics.Stopwatch.GetTimestamp() < deadline)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }
            // Announce the sleep, then look again: a step published in between is seen here, a later one wakes us.
            Volatile.Write(ref _sleeping[index - 1], 1);
            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                _wake[index - 1].Wait();
            }
            Volatile.Write(ref _sleeping[index - 1], 0);
            deadline = System.Diagnostics.Stopwatch.GetTimestamp() + IdleSpinTicks;
        }
    }

    public void Dispose()
    {
        if (_stopping || Count == 1)
        {
            return;
        }
        _stopping = true;
        foreach (var wake in _wake)
        {
            wake.Release();
        }
        foreach (var worker in _workers)
        {
            worker.Join();
        }
        foreach (var wake in _wake)
        {
            wake.Dispose();
        }
    }
}

/// <summary>What <see cref="KernelThreads.Run"/> throws when one of its threads failed: that thread's exception is the inner one.</summary>
public sealed class KernelThreadException(Exception failure)
    : InvalidOperationException($"a kernel thread failed: {failure.Message}", failure);
