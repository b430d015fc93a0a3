using System.Collections.Concurrent;
using System.Diagnostics;
using RecurFormer.Engine.Caching;
using RecurFormer.Engine.Output;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Engine.Scheduling;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Engine;

/// <summary>
/// The serving engine: one model, many requests, one dedicated thread that owns every tensor of the step loop
/// (TorchSharp dispose scopes and grad mode are per thread). Other threads only submit requests, read their event
/// streams and read <see cref="Stats"/>. Each step: take new requests, drop cancelled ones, plan (decode +
/// prefill chunks + admissions), run the decode batch and the prefill batch through the model, sample, and emit
/// token events. A failure while processing one request ends that request with an <see cref="ErrorEvent"/>.
/// </summary>
public sealed class LLMEngine : IDisposable
{
    private readonly ICausalLM _model;
    private readonly CheckpointTokenizer? _tokenizer;
    private readonly EngineOptions _options;
    private readonly HybridCacheManager _cache;
    private readonly Scheduler _scheduler;
    private readonly ConcurrentQueue<RequestState> _submitted = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly List<RequestState> _active = [];
    private volatile bool _accepting = true;
    private volatile bool _stopping;
    private int _queued;
    private long _promptTokens, _generationTokens, _steps;
    private EngineStats _stats;

    public LLMEngine(ICausalLM model, CheckpointTokenizer? tokenizer, EngineOptions options)
    {
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        MaxModelLen = options.MaxModelLen ?? (model.Config is Model.Configuration.TransformerConfig t ? t.MaxPositionEmbeddings : 1 << 20);
        var kvDType = options.KvCacheDType is "auto" or "" ? model.Target.DType : TorchRuntime.ParseDType(options.KvCacheDType, model.Target.Device);
        Layout = new CacheLayout(model.Config, kvDType, options.BlockSize);
        _cache = new HybridCacheManager(Layout, options.CacheMemoryBytes, model.Target.Device, model.Target.DType);
        _scheduler = new Scheduler(options, _cache);
        EosTokenIds = (tokenizer?.EosTokenIds ?? model.Config.EosTokenIds).ToHashSet();
        _stats = new EngineStats(0, 0, _cache.Usage(), 0, 0, 0, 0, 0);
        _thread = new Thread(Loop) { IsBackground = true, Name = "recurformer-engine" };
        _thread.Start();
    }

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
        Validate(request);
        if (Interlocked.Increment(ref _queued) > _options.MaxWaitingRequests)
        {
            Interlocked.Decrement(ref _queued);
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
        _submitted.Enqueue(state);
        _wake.Release();
        if (_stopping && !_thread.IsAlive)
        {
            // The loop ended between our check and the enqueue: nobody will ever serve this request.
            throw new EngineUnavailableException("the engine is not accepting requests (starting or shutting down)");
        }
        return state.Events;
    }

    private void Validate(GenerationRequest request)
    {
        var prompt = request.PromptTokenIds;
        if (prompt.Count == 0)
        {
            throw new EngineRequestException("prompt", "the prompt is empty");
        }
        var vocab = _model.Config.VocabSize;
        var outside = prompt.Where(id => id < 0 || id >= vocab).Select(id => (int?)id).FirstOrDefault();
        if (outside is not null)
        {
            throw new EngineRequestException("prompt", $"token id {outside} is outside the vocabulary (0..{vocab - 1})");
        }
        if (request.Sampling.Validate(vocab) is { } problem)
        {
            throw new EngineRequestException(problem.Param, problem.Message);
        }
        var total = (long)prompt.Count + request.Sampling.MaxTokens;
        if (total > MaxModelLen)
        {
            throw new EngineRequestException("max_tokens",
                $"This model's maximum context length is {MaxModelLen} tokens. However, you requested {total} tokens ({prompt.Count} in the prompt, {request.Sampling.MaxTokens} in the completion). Please reduce the length of the prompt or the completion.",
                "context_length_exceeded");
        }
        if (!_cache.CouldEverFit((int)total))
        {
            throw new EngineRequestException("max_tokens",
                $"a sequence of {total} tokens needs {Layout.SequenceBytes((int)total):N0} bytes of cache, more than the whole cache budget ({_cache.BudgetBytes:N0} bytes)",
                "context_length_exceeded");
        }
    }

    /// <summary>
    /// Stops taking requests, lets running ones finish for up to <paramref name="grace"/>, then cancels the rest and
    /// stops the engine thread.
    /// </summary>
    public async Task StopAsync(TimeSpan grace)
    {
        _accepting = false;
        var deadline = Stopwatch.GetTimestamp() + (long)(grace.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline && (Stats.Running > 0 || Stats.Waiting > 0 || !_submitted.IsEmpty))
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
                    foreach (var request in _active.ToList())
                    {
                        Abort(request);
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
                foreach (var request in _active.ToList())
                {
                    Fail(request, $"internal engine error: {error.Message}");
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
                Admit(request);
            }
            catch (Exception error)
            {
                Fail(request, error.Message);
            }
        }
    }

    /// <summary>A new request joins the waiting queue as its first choice (the others fork after its prefill).</summary>
    private void Admit(RequestState request)
    {
        var sampling = request.Request.Sampling;
        var first = new Sequence(request, 0, request.Request.PromptTokenIds, request.Request.PromptTokenIds.Count,
            sampling.Seed is { } seed ? new Generator((ulong)seed, _model.Target.Device) : null, new TextOutput(_tokenizer, sampling.Stop));
        request.Sequences.Add(first);
        _active.Add(request);
        _scheduler.Enqueue(first);
    }

    private void DropCancelled()
    {
        foreach (var request in _active.Where(r => r.IsCancelled).ToList())
        {
            Abort(request);
        }
    }

    private void Step()
    {
        var plan = _scheduler.Plan();
        _steps++;
        foreach (var (sequence, _) in plan.Prefill.Where(p => p.Sequence.Request.ScheduledAt is null))
        {
            sequence.Request.ScheduledAt = Stopwatch.GetTimestamp();
            Interlocked.Decrement(ref _queued);
            _promptTokens += sequence.PromptLength;
            sequence.Request.Emit(new ScheduledEvent());
        }
        if (plan.Decode.Count > 0)
        {
            Run(plan.Decode.Select(s => (s, 1)).ToList());
        }
        if (plan.Prefill.Count > 0)
        {
            Run(plan.Prefill);
        }
    }

    /// <summary>One forward over the given sequences, then a token for each one that has caught up with its tokens.</summary>
    private void Run(IReadOnlyList<(Sequence Sequence, int Tokens)> work)
    {
        // A request failed or finished earlier in this step (e.g. during the decode batch) is no longer in the work.
        work = work.Where(w => !w.Sequence.Finished && w.Sequence.Cache is not null).ToList();
        if (work.Count == 0)
        {
            return;
        }
        Tensor logits;
        try
        {
            var batch = new ForwardBatch(work.Select(w => w.Sequence.NextTokens(w.Tokens)).ToArray(), work.Select(w => (Model.Caching.ISequenceCache)w.Sequence.Cache!).ToArray());
            logits = _model.Forward(batch);
        }
        catch (Exception error)
        {
            // The batch's caches may be half-written: every request in it ends with the error; others go on.
            foreach (var request in work.Select(w => w.Sequence.Request).Distinct().ToList())
            {
                Fail(request, $"model forward failed: {error.Message}");
            }
            return;
        }
        var ready = work.Select(w => !w.Sequence.Finished && w.Sequence.Remaining == 0).ToArray();
        long[]? argmax = null;
        if (work.Where((w, i) => ready[i] && Sampler.IsPlainGreedy(w.Sequence)).Any())
        {
            using var best = logits.argmax(1).cpu();
            argmax = best.data<long>().ToArray();
        }
        for (var row = 0; row < work.Count; row++)
        {
            var sequence = work[row].Sequence;
            if (sequence.Finished || sequence.Request.Done || sequence.Remaining > 0)
            {
                continue;
            }
            try
            {
                if (FailWhen?.Invoke(sequence.Request.Request.Id) == true)
                {
                    throw new InvalidOperationException("injected failure");
                }
                var scores = logits[row];
                if (sequence.Choice == 0 && !sequence.Request.Forked && sequence.Params.N > 1)
                {
                    Fork(sequence, scores); // before the parent's own token: accepting it may finish the parent and free its cache
                }
                Accept(sequence, argmax is not null && Sampler.IsPlainGreedy(sequence) ? ((int)argmax[row], null) : Sampler.Sample(scores, sequence));
            }
            catch (Exception error)
            {
                Fail(sequence.Request, error.Message);
            }
        }
    }

    /// <summary>n > 1: the other choices start from the first choice's prefill (its cache is copied, not recomputed).</summary>
    private void Fork(Sequence parent, Tensor logits)
    {
        var request = parent.Request;
        request.Forked = true;
        var sampling = request.Request.Sampling;
        for (var choice = 1; choice < sampling.N; choice++)
        {
            var prompt = request.Request.PromptTokenIds;
            var child = new Sequence(request, choice, prompt, prompt.Count,
                sampling.Seed is { } seed ? new Generator((ulong)(seed + choice), _model.Target.Device) : null, new TextOutput(_tokenizer, sampling.Stop));
            request.Sequences.Add(child);
            child.Cache = _cache.TryFork(parent.Cache!, prompt.Count);
            if (child.Cache is null)
            {
                _scheduler.Enqueue(child); // no memory to copy into: it waits and recomputes the prompt
                continue;
            }
            _scheduler.AddRunning(child);
            Accept(child, Sampler.Sample(logits, child));
        }
    }

    private void Accept(Sequence sequence, (int Token, TokenLogprob? Logprob) sampled)
    {
        var request = sequence.Request;
        request.FirstTokenAt ??= Stopwatch.GetTimestamp();
        sequence.Append(sampled.Token);
        request.CompletionTokens++;
        _generationTokens++;

        if (request.StopTokenIds.Contains(sampled.Token))
        {
            Finish(sequence, FinishReason.Stop, sequence.Output.Finish());
            return;
        }
        var (delta, stopped) = sequence.Output.Add(sampled.Token, checkStops: sequence.Generated > sequence.Params.MinTokens);
        request.Emit(new TokenEvent(sequence.Choice, sampled.Token, delta, sampled.Logprob));
        if (stopped)
        {
            Finish(sequence, FinishReason.Stop, "");
        }
        else if (sequence.Generated >= sequence.Params.MaxTokens || sequence.Tokens.Count >= MaxModelLen)
        {
            Finish(sequence, FinishReason.Length, sequence.Output.Finish());
        }
    }

    private void Finish(Sequence sequence, FinishReason reason, string text)
    {
        var request = sequence.Request;
        sequence.Finished = true;
        sequence.DropCache();
        _scheduler.Remove(sequence);
        request.FinishedChoices++;
        request.Emit(new FinishedEvent(sequence.Choice, reason, text, new Usage(request.Request.PromptTokenIds.Count, request.CompletionTokens), request.Timings()));
        if (request.FinishedChoices == request.Request.Sampling.N)
        {
            Close(request);
        }
    }

    private void Fail(RequestState request, string message)
    {
        request.Emit(new ErrorEvent(message));
        Close(request);
    }

    private void Abort(RequestState request)
    {
        foreach (var sequence in request.Sequences.Where(s => !s.Finished))
        {
            request.Emit(new FinishedEvent(sequence.Choice, FinishReason.Abort, "", new Usage(request.Request.PromptTokenIds.Count, request.CompletionTokens), request.Timings()));
        }
        Close(request);
    }

    /// <summary>Frees every choice of the request and completes its stream.</summary>
    private void Close(RequestState request)
    {
        if (request.ScheduledAt is null)
        {
            Interlocked.Decrement(ref _queued);
            request.ScheduledAt = Stopwatch.GetTimestamp();
        }
        foreach (var sequence in request.Sequences)
        {
            sequence.Finished = true;
            _scheduler.Remove(sequence);
            sequence.Dispose();
        }
        _active.Remove(request);
        request.CancellationRegistration.Dispose();
        request.Complete();
    }

    private void Publish() => Volatile.Write(ref _stats, new EngineStats(
        _scheduler.RunningCount,
        _scheduler.WaitingCount + _submitted.Count,
        _cache.Usage(),
        _scheduler.Preemptions,
        _promptTokens,
        _generationTokens,
        _steps,
        DisposeScopeManager.Statistics.ThreadTotalLiveCount));

    public void Dispose()
    {
        if (_thread.IsAlive)
        {
            StopAsync(TimeSpan.Zero).GetAwaiter().GetResult();
        }
        _cache.Dispose();
        _wake.Dispose();
    }
}
