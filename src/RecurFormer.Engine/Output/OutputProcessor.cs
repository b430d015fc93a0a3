using System.Diagnostics;
using RecurFormer.Engine.Caching;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Engine.Scheduling;
using RecurFormer.Tokenization;

namespace RecurFormer.Engine.Output;

/// <summary>
/// What happens to a request once the model has run: a sampled token is accepted (text, stop conditions, events),
/// n > 1 choices are forked from the first choice's prefill, and requests finish, fail, abort and close (freeing
/// their caches and completing their streams). Keeps the token counters. Engine thread only.
/// </summary>
internal sealed class OutputProcessor(Scheduler scheduler, HybridCacheManager cache, WaitingGauge waiting, CheckpointTokenizer? tokenizer, int maxModelLen)
{
    private readonly List<RequestState> _active = [];

    public IReadOnlyList<RequestState> Active => _active;
    public long PromptTokens { get; private set; }
    public long GenerationTokens { get; private set; }

    /// <summary>A new request joins the waiting queue as its first choice (the others fork after its prefill).</summary>
    public void Admit(RequestState request)
    {
        var first = NewSequence(request, 0);
        if (request.Request.Sampling.PromptLogprobs is not null)
        {
            first.PromptLogprobs = [null]; // nothing precedes the first prompt token
        }
        request.Sequences.Add(first);
        _active.Add(request);
        scheduler.Enqueue(first);
    }

    private Sequence NewSequence(RequestState request, int choice) =>
        new(request, choice, new TextOutput(tokenizer, request.Request.Sampling.Stop));

    /// <summary>The request's first prefill chunk is about to run: it leaves the queue.</summary>
    public void Scheduled(Sequence sequence)
    {
        var request = sequence.Request;
        if (request.ScheduledAt is not null)
        {
            return;
        }
        request.ScheduledAt = Stopwatch.GetTimestamp();
        waiting.Leave();
        PromptTokens += sequence.PromptLength;
        request.Emit(new ScheduledEvent());
    }

    /// <summary>
    /// Prompt log-probabilities of one chunk (of positions start + 1 onwards); sent once the whole prompt is covered.
    /// A chunk recomputed after preemption brings positions already gathered: those are skipped.
    /// </summary>
    public void AddPromptLogprobs(Sequence sequence, int start, IReadOnlyList<TokenLogprob> chunk)
    {
        var gathered = sequence.PromptLogprobs!;
        gathered.AddRange(chunk.Skip(gathered.Count - (start + 1)));
        if (gathered.Count == sequence.PromptLength)
        {
            sequence.Request.Emit(new PromptLogprobsEvent(gathered));
            sequence.PromptLogprobs = null;
        }
    }

    /// <summary>
    /// n > 1: the other choices start from the first choice's prefill (its cache is copied, not recomputed) and draw
    /// their first token from the same logits. Runs before the first choice's own token: accepting it may finish it.
    /// </summary>
    public void Fork(Sequence parent, Func<Sequence, (int Token, TokenLogprob? Logprob)> sample)
    {
        var request = parent.Request;
        request.Forked = true;
        for (var choice = 1; choice < request.Request.Sampling.N; choice++)
        {
            var child = NewSequence(request, choice);
            request.Sequences.Add(child);
            child.Cache = cache.TryFork(parent.Cache!, parent.PromptLength);
            if (child.Cache is null)
            {
                scheduler.Enqueue(child); // no memory to copy into: it waits and recomputes the prompt
                continue;
            }
            scheduler.AddRunning(child);
            Accept(child, sample(child));
        }
    }

    public void Accept(Sequence sequence, (int Token, TokenLogprob? Logprob) sampled)
    {
        var request = sequence.Request;
        request.FirstTokenAt ??= Stopwatch.GetTimestamp();
        sequence.Append(sampled.Token);
        sequence.Constraint?.Accept(sampled.Token);
        request.CompletionTokens++;
        GenerationTokens++;

        if (request.StopTokenIds.Contains(sampled.Token))
        {
            if (sampled.Logprob is not null)
            {
                // The stop token adds no text, but it was sampled and counted: a client that asked for logprobs gets
                // its entry too (as vLLM reports it), so the logprobs cover every completion token.
                request.Emit(new TokenEvent(sequence.Choice, sampled.Token, "", sampled.Logprob));
            }
            Finish(sequence, FinishReason.Stop, sequence.Output.Finish());
            return;
        }
        var (delta, stopped) = sequence.Output.Add(sampled.Token, checkStops: sequence.Generated > sequence.Params.MinTokens);
        request.Emit(new TokenEvent(sequence.Choice, sampled.Token, delta, sampled.Logprob));
        if (stopped)
        {
            Finish(sequence, FinishReason.Stop, "");
        }
        else if (sequence.Constraint is { MustEnd: true })
        {
            Finish(sequence, FinishReason.Stop, sequence.Output.Finish());
        }
        else if (sequence.Generated >= sequence.Params.MaxTokens || sequence.Tokens.Count >= maxModelLen)
        {
            Finish(sequence, FinishReason.Length, sequence.Output.Finish());
        }
    }

    private void Finish(Sequence sequence, FinishReason reason, string text)
    {
        var request = sequence.Request;
        sequence.Finished = true;
        scheduler.Remove(sequence);
        request.FinishedChoices++;
        request.Emit(new FinishedEvent(sequence.Choice, reason, text, Usage(request), request.Timings()));
        if (request.FinishedChoices == request.Request.Sampling.N)
        {
            Close(request);
        }
    }

    public void Fail(RequestState request, string message)
    {
        request.Emit(new ErrorEvent(message));
        Close(request);
    }

    public void Abort(RequestState request)
    {
        foreach (var sequence in request.Sequences.Where(s => !s.Finished))
        {
            request.Emit(new FinishedEvent(sequence.Choice, FinishReason.Abort, "", Usage(request), request.Timings()));
        }
        Close(request);
    }

    /// <summary>Frees every choice of the request and completes its stream.</summary>
    private void Close(RequestState request)
    {
        if (request.ScheduledAt is null)
        {
            waiting.Leave();
            request.ScheduledAt = Stopwatch.GetTimestamp();
        }
        foreach (var sequence in request.Sequences)
        {
            sequence.Finished = true;
            scheduler.Remove(sequence);
        }
        _active.Remove(request);
        request.CancellationRegistration.Dispose();
        request.Complete();
    }

    private static Usage Usage(RequestState request) => new(request.Request.PromptTokenIds.Count, request.CompletionTokens);
}
