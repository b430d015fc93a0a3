using System.Runtime.ExceptionServices;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Kernels;
using RecurFormer.Model.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// The workers of one stage: data parallelism inside one process, as DistributedDataParallel does across GPUs. Each
/// worker runs its share of every batch on its own thread with its own teacher and its own student (the master
/// itself for worker 0 when no lower precision is asked, else a <see cref="StudentReplica"/>), so no model is touched
/// by two threads; the replicas' gradients are added to the master's in worker order, so a step's result does not
/// depend on which worker finishes first, and the losses are means over the whole batch whatever the split.
/// Why: on a small CPU two sequences on two cores, one libtorch thread each, beat one batch on two libtorch threads
/// (most of a step is operations too small to split well; docs/conversion.md, "Training on a CPU").
/// </summary>
internal sealed class DistillTeam : IDisposable
{
    private readonly Distiller[] _workers;
    private readonly StudentReplica?[] _replicas;
    private readonly KernelThreads?[] _kernelThreads;
    private readonly KernelThreads _threads;

    /// <param name="teachers">One teacher per worker (the first is the run's).</param>
    /// <param name="student">The master student (float32 weights that the optimiser updates).</param>
    /// <param name="folder">A checkpoint of the student's architecture, which replicas load before taking the master's weights.</param>
    /// <param name="replicaTarget">Where and in which dtype the replicas run.</param>
    /// <param name="lowPrecision">Whether every worker, the first included, runs a replica in a lower dtype than the master's.</param>
    /// <param name="trained">The parameters this stage trains (the ones replicas take before each step and give gradients for).</param>
    /// <param name="weighting">Stage 2's weights of answer positions; null: every position alike.</param>
    public DistillTeam(IReadOnlyList<ICausalLM> teachers, ICausalLM student, string folder, ComputeTarget replicaTarget, bool lowPrecision,
        IReadOnlyList<Parameter> trained, DistillOptions options, TeacherLogitCache? cache, AnswerWeighting? weighting = null)
    {
        var count = teachers.Count;
        _replicas = new StudentReplica?[count];
        _kernelThreads = new KernelThreads?[count];
        _workers = new Distiller[count];
        try
        {
            for (var w = 0; w < count; w++)
            {
                _replicas[w] = w > 0 || lowPrecision ? new StudentReplica(student, folder, replicaTarget, trained) : null;
                // With more than one libtorch thread per worker, each worker gets its own team for the CPU kernels, so
                // that workers do not queue for the process's one team; with one (the default here) the process's
                // team runs inline on each worker's thread anyway.
                _kernelThreads[w] = count > 1 && get_num_threads() > 1 ? new KernelThreads(get_num_threads()) : null;
                _workers[w] = new Distiller(teachers[w], _replicas[w]?.Model ?? student, options) { TeacherCache = cache, AnswerWeighting = weighting, Threads = _kernelThreads[w] };
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        _threads = count == 1 ? KernelThreads.Single : new KernelThreads(count);
        _threads.SetLibTorchThreads(get_num_threads());   // each worker its share, as set on this thread
    }

    /// <summary>The workers' threads (one per worker, the caller first), each with its share of libtorch's threads.</summary>
    public KernelThreads Threads => _threads;

    public int Count => _workers.Length;

    /// <summary>Testing only: runs after the workers of a step, before their gradients are summed (a failure there leaves them half summed).</summary>
    internal Action? AfterWorkers { get; set; }

    /// <summary>Where the phases of each step are timed (workers, add, push).</summary>
    public StepPhases Phases { get; init; } = new();

    /// <summary>Stage-1 loss and gradients (into the master's mixers) for one batch: the mean relative loss over layers and each layer's.</summary>
    public (double Loss, Dictionary<int, double> PerLayer) Stage1Backward(IReadOnlyList<long[]> batch)
    {
        var shares = Shares(batch);
        var layers = _workers[0].Layers;
        // One round of workers: each runs its share's teacher, hands the targets over (Stage1Handoff) and goes on to the
        // mixer tasks, which MixerTaskQueue balances. A task's gradients are for norm 1 (each layer's loss is relative
        // to the energy of its targets over the whole batch, known only when every teacher is done): they are added,
        // divided by the norm, once the workers are done.
        var handoff = new Stage1Handoff(shares.Length);
        var results = new Stage1Gradients?[shares.Length, layers.Count];
        try
        {
            var tasks = new MixerTaskQueue(shares.Length, layers.Count);
            (double Teacher, double Mixers)[] parts;
            using (Phases.Time("workers"))
            {
                parts = Run(shares.Length, w =>
                {
                    double teacher;
                    try
                    {
                        // From before the pull, so that the two parts add up to the worker's time (the pull is the teacher's preparation).
                        var start = System.Diagnostics.Stopwatch.GetTimestamp();
                        _replicas[w]?.PullWeights();
                        handoff.Publish(w, _workers[w].Stage1Teacher(shares[w]));
                        teacher = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
                    }
                    catch (Exception error)
                    {
                        handoff.Fail(error);
                        throw;
                    }
                    var mixers = System.Diagnostics.Stopwatch.GetTimestamp();
                    while (tasks.TryTake(w, out var share, out var layer))
                    {
                        results[share, layer] = _workers[share].Stage1LayerGradients(handoff.TargetsOf(share), layer, _kernelThreads[w]);
                    }
                    return (teacher, System.Diagnostics.Stopwatch.GetElapsedTime(mixers).TotalSeconds);
                }, failure: () => handoff.Failure);
            }
            for (var w = 0; w < parts.Length; w++)
            {
                Phases.Add($"worker {w} teacher", parts[w].Teacher);
                Phases.Add($"worker {w} mixers", parts[w].Mixers);   // a stolen task's wait for its share's targets included
            }
            // How far apart the same work ran within a step (the means of the workers' phases hide it).
            Phases.Add("teacher spread", parts.Max(p => p.Teacher) - parts.Min(p => p.Teacher));
            var losses = AddStage1Gradients(results, handoff.Reference());
            AfterWorkers?.Invoke();
            PushGradients();
            var perLayer = Enumerable.Range(0, layers.Count).ToDictionary(l => layers[l], l => Enumerable.Range(0, shares.Length).Sum(s => losses[s, l]));
            return (perLayer.Values.Average(), perLayer);
        }
        finally
        {
            foreach (var result in results)
            {
                result?.Dispose();
            }
            foreach (var share in handoff.Published)
            {
                share.Dispose(); // all of them, also when a worker failed
            }
        }
    }

    /// <summary>
    /// Each (share, layer)'s gradients added to its share's student, divided by the layer's norm; returns the losses.
    /// The pairs touch disjoint parameters, so the team's threads take them in turn, largest layers first.
    /// </summary>
    private double[,] AddStage1Gradients(Stage1Gradients?[,] results, IReadOnlyDictionary<int, (double Energy, long Elements)> reference)
    {
        using var _ = Phases.Time("add");
        var losses = new double[results.GetLength(0), results.GetLength(1)];
        var pairs = (from share in Enumerable.Range(0, results.GetLength(0))
                     from layer in Enumerable.Range(0, results.GetLength(1))
                     orderby results[share, layer]!.Elements descending
                     select (share, layer)).ToArray();
        var next = -1;
        OnEveryThread(_ =>
        {
            for (var i = Interlocked.Increment(ref next); i < pairs.Length; i = Interlocked.Increment(ref next))
            {
                var (share, layer) = pairs[i];
                losses[share, layer] = results[share, layer]!.AddTo(_workers[share].Stage1Norm(layer, reference));
            }
        });
        return losses;
    }

    /// <summary>Stage-2 loss and gradients (into the master's trained parameters) for one batch: (total, KL, CE).</summary>
    public (double Loss, double Kl, double Ce) Stage2Backward(IReadOnlyList<long[]> batch, IReadOnlyList<long> streamIndices)
    {
        var shares = Shares(batch);
        var indices = Shares(streamIndices);
        ((double Loss, double Kl, double Ce) Losses, double Pull, Stage2Times Times)[] parts;
        using (Phases.Time("workers"))
        {
            parts = Run(shares.Length, w =>
            {
                var start = System.Diagnostics.Stopwatch.GetTimestamp();
                _replicas[w]?.PullWeights();
                var pull = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
                var losses = _workers[w].Stage2Backward(shares[w], indices[w], batch);
                return (losses, pull, _workers[w].LastStage2Times);
            });
        }
        for (var w = 0; w < parts.Length; w++)
        {
            var (pull, times) = (parts[w].Pull, parts[w].Times);
            Phases.Add($"worker {w} pull", pull);
            Phases.Add($"worker {w} teacher", times.Teacher);
            Phases.Add($"worker {w} student", times.Student);
            Phases.Add($"worker {w} losses", times.Losses);
            Phases.Add($"worker {w} backward", times.Backward);
        }
        AfterWorkers?.Invoke();
        PushGradients();
        return (parts.Sum(p => p.Losses.Loss), parts.Sum(p => p.Losses.Kl), parts.Sum(p => p.Losses.Ce));
    }

    /// <summary>The batch cut into one contiguous share per worker (fewer when the batch is smaller), sizes differing by at most one.</summary>
    private T[][] Shares<T>(IReadOnlyList<T> batch)
    {
        var count = Math.Min(Count, batch.Count);
        return Enumerable.Range(0, count).Select(w =>
        {
            var (start, end) = ((int)((long)batch.Count * w / count), (int)((long)batch.Count * (w + 1) / count));
            return batch.Skip(start).Take(end - start).ToArray();
        }).ToArray();
    }

    /// <summary>Drops the replicas' gradients, which a failed step may have left (the master's are zeroed by the optimiser).</summary>
    public void ClearGradients()
    {
        foreach (var replica in _replicas)
        {
            replica?.ClearGradients();
        }
    }

    /// <summary>
    /// The replicas' gradients added to the master's, each parameter's in worker order, the parameters split among the
    /// team's threads. (Each worker copies the master's weights into its own replica at the start of its share of a
    /// step, in parallel: the master's weights are only read during a step.)
    /// </summary>
    private void PushGradients()
    {
        using var _ = Phases.Time("push");
        OnEveryThread(thread =>
        {
            foreach (var replica in _replicas)
            {
                replica?.PushGradients(thread, _threads.Count);
            }
        });
    }

    /// <summary>Runs body(thread) on every thread of the team (not timed as a worker's); a thread's error is thrown as itself.</summary>
    private void OnEveryThread(Action<int> body)
    {
        try
        {
            _threads.Run(body);
        }
        catch (KernelThreadException error)
        {
            ExceptionDispatchInfo.Throw(error.InnerException!);
        }
    }

    /// <summary>
    /// Runs work(w) for workers 0..count-1 at once (worker 0 on the calling thread) and returns their results in order;
    /// each worker's time is added to its phase.
    /// </summary>
    /// <param name="failure">The error behind a worker's <see cref="OperationCanceledException"/> (a wait that another worker's failure ended), reported in its place.</param>
    private T[] Run<T>(int count, Func<int, T> work, Func<Exception?>? failure = null)
    {
        var results = new T[count];
        var seconds = new double[count];
        try
        {
            _threads.Run(w =>
            {
                if (w < count)
                {
                    var start = System.Diagnostics.Stopwatch.GetTimestamp();
                    results[w] = work(w);
                    seconds[w] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
                }
            });
            for (var w = 0; w < count; w++)
            {
                Phases.Add($"worker {w}", seconds[w]); // a gap between them is time the faster one waits
            }
        }
        catch (KernelThreadException error)
        {
            // The worker's own error, not the team's wrapper (nor a wait that the error ended in another worker).
            ExceptionDispatchInfo.Throw(error.InnerException is OperationCanceledException && failure?.Invoke() is { } cause ? cause : error.InnerException!);
        }
        return results;
    }

    public void Dispose()
    {
        if (_threads is not null && _threads != KernelThreads.Single)
        {
            _threads.Dispose();
        }
        foreach (var threads in _kernelThreads ?? [])
        {
            threads?.Dispose();
        }
        foreach (var worker in _workers)
        {
            worker?.Dispose();
        }
        foreach (var replica in _replicas)
        {
            replica?.Dispose();
        }
    }
}
