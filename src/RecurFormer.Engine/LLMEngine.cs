using System.Collections.Concurrent;
using System.Diagnostics;
using RecurFormer.Engine.Caching;
using RecurFormer.Engine.Execution;
using RecurFormer.Engine.Output;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Scheduling;
using RecurFormer.Model.Caching;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Engine;

/// <summary>
/// The serving engine: one model, many requests, one dedicated thread that owns every tensor of the step loop
/// (TorchSharp dispose scopes and grad mode are per thread). Other threads only submit requests, read their event
/// streams and read <see cref="Stats"/>. Each step reads plan → run → process: the scheduler plans (decode + prefill
/// chunks + admissions), the model runner runs them in one forward and samples, the output processor accepts the
/// tokens and emits events. A failure while processing one request ends that request with an <see cref="ErrorEvent"/>.
/// </summary>
public sealed class LLMEngine : IDisposable
{
    private readonly ICausalLM _model;
    private readonly CheckpointTokenizer? _tokenizer;
    private readonly EngineOptions _options;
    private readonly HybridCacheManager _cache;
    private readonly Scheduler _scheduler;
    private readonly ModelRunner _runner;
    private readonly OutputProcessor _output;
    private readonly RequestValidator _validator;
    private readonly WaitingGauge _waiting;
    private readonly ConcurrentQueue<RequestState> _submitted = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private volatile bool _accepting = true;
    private volatile bool _stopping;
    private long _steps;
    private int _unfinished; // requests submitted and not yet complete (what a drain waits for)
    private EngineStats _stats;

    public LLMEngine(ICausalLM model, CheckpointTokenizer? tokenizer, EngineOptions options)
    {
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        MaxModelLen = options.MaxModelLen ?? (model.Config is TransformerConfig t ? t.MaxPositionEmbeddings : 1 << 20);
        var kvDType = options.KvCacheDType is "auto" or ""
            ? CacheLayout.DefaultKvDType(model.Target.DType, model.Target.Device.type)
            : TorchRuntime.ParseDType(options.KvCacheDType, model.Target.Device);
        model.PreparePositions(MaxModelLen + 1);
        Layout = new CacheLayout(model.Config, kvDType, options.BlockSize);
        _cache = new HybridCacheManager(Layout, options.CacheMemoryBytes, options.MaxNumSeqs, MaxModelLen, model.Target.Device,
            options.EnablePrefixCaching ? CacheIdentity(model.Config, Layout) : null)
        {
            SnapshotInterval = Math.Max(1, options.SnapshotIntervalTokens / options.BlockSize) * options.BlockSize,
        };
        _scheduler = new Scheduler(options, _cache);
        _waiting = new WaitingGauge(options.MaxWaitingRequests);
        // The CPU kernels use as many threads as libtorch was given (--threads); CUDA needs none.
        _runner = new ModelRunner(model, model.Target.Device.type == DeviceType.CPU ? get_num_threads() : 1);
        _output = new OutputProcessor(_scheduler, _cache, _waiting, tokenizer, MaxModelLen);
        _validator = new RequestValidator(model.Config.VocabSize, MaxModelLen, _cache);
        EosTokenIds = (tokenizer?.EosTokenIds ?? model.Config.EosTokenIds).ToHashSet();
        _stats = new EngineStats(0, 0, _cache.Usage(), 0, 0, 0, 0, 0);
        _thread = new Thread(Loop) { IsBackground = true, Name = "recurformer-engine" };
        _thread.Start();
    }

    /// <summary>What, besides the tokens, decides a cached block's contents: salts the block names.</summary>
    private static string CacheIdentity(ModelConfig config, CacheLayout layout) =>
        $"{config.ModelType}/{config.NumHiddenLayers}/{config.VocabSize}/{layout.KvDType}/{layout.BlockSize}/{string.Join(',', layout.FullGroups)}/{string.Join(',', layout.WindowGroups)}/{layout.Window}";

    /// <summary>
    /// Whether prefix caching works for this model: null when it does (or is off), else why not (said at start-up:
    /// caching must never be a silent no-op).
    /// </summary>
    public string? PrefixCachingProblem => _options.EnablePrefixCaching && !_cache.PrefixCaching
        ? "prefix caching is enabled but has no effect: the model keeps no attention KV blocks to name (a pure Mamba model)"
        : null;

    public bool PrefixCaching => _cache.PrefixCaching;

    public ICausalLM Model => _model;
    public CheckpointTokenizer? Tokenizer => _tokenizer;
    public CacheLayout Layout { get; }
    public int MaxModelLen { get; }
    public IReadOnlySet<int> EosTokenIds { get; }
    public long CacheBudgetBytes => _cache.BudgetBytes;

    /// <summary>The latest snapshot, published after every step.</summary>
    public EngineStats Stats => Volatile.Read(ref _stats);

    public bool IsRunning => _thread.IsAlive && _accepting;

    /// <summary>Test hook: throws inside the processing of the requests it returns true for (failure isolation).</summary>
    internal Func<string, bool>? FailWhen { get; set; }

    /// <summary>
    /// Queues a request. Its events (tokens, one finish per choice, or an error) arrive on the returned reader, which
    /// completes when the request is done. Cancelling <paramref name="cancellation"/> frees its memory at the next step.
    /// </summary>
    public System.Threading.Channels.ChannelReader<EngineEvent> Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        if (!_accepting || _stopping)
        {
            throw new EngineUnavailableException("the engine is not accepting requests (starting or shutting down)");
        }
        _validator.Validate(request);
        if (!_waiting.TryEnter())
        {
            throw new EngineOverloadedException($"the waiting queue is full ({_options.MaxWaitingRequests} requests); retry later");
        }
        var stopIds = new HashSet<int>(request.Sampling.StopTokenIds);
        if (!request.Sampling.IgnoreEos)
        {
            stopIds.UnionWith(EosTokenIds);
        }
        var state = new RequestState(request, stopIds);
        if (cancellation.CanBeCanceled)
        {
            state.CancellationRegistration = cancellation.Register(() =>
            {
                state.Cancel();
                try
                {
                    _wake.Release();
                }
                catch (ObjectDisposedException)
                {
                    // The engine is gone; nothing to wake.
                }
            });
        }
        Interlocked.Increment(ref _unfinished);
        _ = state.Events.Completion.ContinueWith(_ => Interlocked.Decrement(ref _unfinished), TaskScheduler.Default);
        _submitted.Enqueue(state);
        _wake.Release();
        if (_stopping && !_thread.IsAlive)
        {
            // The loop ended between our check and the enqueue: nobody will ever serve this request.
            throw new EngineUnavailableException("the engine is not accepting requests (starting or shutting down)");
        }
        return state.Events;
    }

    /// <summary>
    /// Stops taking requests, lets running ones finish for up to <paramref name="grace"/>, then cancels the rest and
    /// stops the engine thread.
    /// </summary>
    public async Task StopAsync(TimeSpan grace)
    {
        _accepting = false;
        var deadline = Stopwatch.GetTimestamp() + (long)(grace.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline && Volatile.Read(ref _unfinished) > 0)
        {
            await Task.Delay(50);
        }
        _stopping = true;
        _wake.Release();
        await Task.Run(() => _thread.Join());
    }

    private void Loop()
    {
        while (true)
        {
            try
            {
                TakeSubmissions();
                DropCancelled();
                if (_stopping)
                {
                    TakeSubmissions();
                    foreach (var request in _output.Active.ToList())
                    {
                        _output.Abort(request);
                    }
                    Publish();
                    return;
                }
                if (_scheduler.IsIdle)
                {
                    Publish();
                    _wake.Wait(TimeSpan.FromMilliseconds(200));
                    continue;
                }
                using (var scope = NewDisposeScope())
                {
                    Step();
                }
                Publish();
            }
            catch (Exception error)
            {
                // A bug in the loop itself must not kill the engine: fail what is in flight and go on.
                foreach (var request in _output.Active.ToList())
                {
                    _output.Fail(request, $"internal engine error: {error.Message}");
                }
            }
        }
    }

    private void TakeSubmissions()
    {
        while (_submitted.TryDequeue(out var request))
        {
            try
            {
                _output.Admit(request);
            }
            catch (Exception error)
            {
                _output.Fail(request, error.Message);
            }
        }
    }

    private void DropCancelled()
    {
        foreach (var request in _output.Active.Where(r => r.IsCancelled).ToList())
        {
            _output.Abort(request);
        }
    }

    /// <summary>Plan → run → process.</summary>
    private void Step()
    {
        var plan = _scheduler.Plan();
        _steps++;
        foreach (var (sequence, _) in plan.Prefill)
        {
            _output.Scheduled(sequence);
        }
        var work = plan.Decode.Select(s => (s, 1)).Concat(plan.Prefill).ToList();
        if (work.Count == 0)
        {
            return;
        }
        StepResult result;
        try
        {
            result = _runner.Run(work);
        }
        catch (Exception error)
        {
            // The batch's caches may be half-written: every request in it ends with the error; others go on.
            foreach (var request in work.Select(w => w.Item1.Request).Distinct().ToList())
            {
                _output.Fail(request, $"model forward failed: {error.Message}");
            }
            return;
        }
        foreach (var (sequence, _) in work)
        {
            if (sequence.Cache is { } filled)
            {
                _cache.Filled(filled, sequence.Tokens, sequence.PromptLength); // names full blocks, takes snapshots
            }
        }
        using (result)
        {
            Process(work, result);
        }
    }

    /// <summary>Prompt log-probabilities of the chunks that ran, then a token for each sequence that has caught up.</summary>
    private void Process(List<(Sequence Sequence, int Tokens)> work, StepResult result)
    {
        for (var item = 0; item < work.Count; item++)
        {
            var sequence = work[item].Sequence;
            if (sequence.PromptLogprobs is not null && !sequence.Request.Done)
            {
                Guard(sequence, () =>
                {
                    var (start, logprobs) = result.PromptLogprobs(item, sequence.Params.PromptLogprobs ?? 0);
                    _output.AddPromptLogprobs(sequence, start, logprobs);
                });
            }
        }
        foreach (var item in result.Ready)
        {
            var sequence = work[item].Sequence;
            if (sequence.Finished || sequence.Request.Done)
            {
                continue; // a sibling choice failed the request earlier in this step
            }
            Guard(sequence, () =>
            {
                if (FailWhen?.Invoke(sequence.Request.Request.Id) == true)
                {
                    throw new InvalidOperationException("injected failure");
                }
                if (sequence.Choice == 0 && !sequence.Request.Forked && sequence.Params.N > 1)
                {
                    _output.Fork(sequence, child => result.Sample(item, child));
                }
                _output.Accept(sequence, result.Sample(item, sequence));
            });
        }
    }

    /// <summary>Runs one request's processing; its failure ends that request only.</summary>
    private void Guard(Sequence sequence, Action action)
    {
        try
        {
            action();
        }
        catch (Exception error)
        {
            _output.Fail(sequence.Request, error.Message);
        }
    }

    private void Publish() => Volatile.Write(ref _stats, new EngineStats(
        _scheduler.RunningCount,
        _scheduler.WaitingCount + _submitted.Count,
        _cache.Usage(),
        _scheduler.Preemptions,
        _output.PromptTokens,
        _output.GenerationTokens,
        _steps,
        DisposeScopeManager.Statistics.ThreadTotalLiveCount));

    public void Dispose()
    {
        if (_thread.IsAlive)
        {
            StopAsync(TimeSpan.Zero).GetAwaiter().GetResult();
        }
        _runner.Dispose();
        _cache.Dispose();
        _wake.Dispose();
    }
}
