using RecurFormer.Engine.Caching;

namespace RecurFormer.Engine.Scheduling;

/// <summary>The sequences one step feeds and how many tokens each.</summary>
internal sealed record StepPlan(IReadOnlyList<Sequence> Decode, IReadOnlyList<(Sequence Sequence, int Tokens)> Prefill);

/// <summary>
/// Continuous batching: every step, decode one token for each running sequence, continue partial prefills in
/// chunks, and admit waiting sequences (oldest first) while seats, the token budget and cache memory allow.
/// A sequence is admitted with blocks for all its known tokens plus one, so its prefill never waits for memory;
/// when decoding needs a block and none is left, the most recently admitted sequence is preempted: its cache is
/// freed and it waits at the front of the queue, to be recomputed from its tokens (transparent to the client).
/// Two rules keep a full cache from thrashing (preempt, readmit, recompute, preempt again): no admission in a step
/// that preempted, and a new sequence is admitted only if one free block per running sequence remains afterwards.
/// With prefix caching a sequence is admitted with the longest cached prefix of its tokens already in its cache, and
/// prefill chunks end at snapshot points so that the state there can be kept for later requests.
/// </summary>
internal sealed class Scheduler(EngineOptions options, HybridCacheManager cache)
{
    private readonly LinkedList<Sequence> _waiting = new();
    private readonly List<Sequence> _running = [];
    private long _admissions;

    public int WaitingCount => _waiting.Count;
    public int RunningCount => _running.Count;
    public long Preemptions { get; private set; }
    public bool IsIdle => _waiting.Count == 0 && _running.Count == 0;

    public void Enqueue(Sequence sequence) => _waiting.AddLast(sequence);

    /// <summary>A sequence that already has a cache (a forked choice) runs from the next step.</summary>
    public void AddRunning(Sequence sequence)
    {
        sequence.AdmittedAt = ++_admissions;
        _running.Add(sequence);
    }

    /// <summary>Takes a sequence out of scheduling (finished, failed, cancelled) and frees its cache.</summary>
    public void Remove(Sequence sequence)
    {
        if (!_running.Remove(sequence))
        {
            _waiting.Remove(sequence);
        }
        DropCache(sequence);
    }

    private void DropCache(Sequence sequence)
    {
        if (sequence.Cache is { } held)
        {
            cache.Release(held);
            sequence.Cache = null;
        }
    }

    public StepPlan Plan()
    {
        var budget = options.MaxNumBatchedTokens;
        var decode = new List<Sequence>();
        var preemptionsBefore = Preemptions;
        foreach (var sequence in _running.Where(s => s.Remaining == 1).OrderBy(s => s.AdmittedAt).ToList())
        {
            if (budget == 0 || sequence.Cache is null)
            {
                continue;
            }
            if (!MakeRoom(sequence))
            {
                continue; // it preempted itself
            }
            decode.Add(sequence);
            budget--;
        }

        var prefill = new List<(Sequence, int)>();
        foreach (var sequence in _running.Where(s => s.Remaining > 1).OrderBy(s => s.AdmittedAt))
        {
            if (budget == 0)
            {
                break;
            }
            var chunk = ChunkOf(sequence, budget);
            prefill.Add((sequence, chunk));
            budget -= chunk;
        }

        while (Preemptions == preemptionsBefore && _waiting.First is { } node && _running.Count < options.MaxNumSeqs && budget > 0)
        {
            var sequence = node.Value;
            // Prompt log-probabilities need every prompt position computed: such requests skip the prefix cache (as vLLM's).
            var admitted = cache.TryAdmit(sequence.Tokens.Count + 1, headroomBlocks: _running.Count,
                prompt: options.EnablePrefixCaching && sequence.PromptLogprobs is null ? sequence.Tokens : null);
            if (admitted is null)
            {
                break; // first come, first served: nobody overtakes the head of the queue
            }
            _waiting.RemoveFirst();
            sequence.Cache = admitted;
            AddRunning(sequence);
            if (sequence.Remaining == 0)
            {
                continue; // cannot happen (a hit leaves the last prompt token to compute); kept for safety
            }
            var chunk = ChunkOf(sequence, budget);
            prefill.Add((sequence, chunk));
            budget -= chunk;
        }
        return new StepPlan(decode, prefill);
    }

    /// <summary>A prefill chunk: what the step budget allows, ending at the next snapshot point (prefix caching of rings and Mamba state).</summary>
    private int ChunkOf(Sequence sequence, int budget) =>
        Math.Min(Math.Min(sequence.Remaining, budget), cache.TokensToNextSnapshotPoint(sequence.Computed, sequence.PromptLength));

    /// <summary>Reserves the block for the sequence's next token, preempting newer sequences if needed.</summary>
    private bool MakeRoom(Sequence sequence)
    {
        while (!cache.TryReserve(sequence.Cache!, sequence.Computed + 1))
        {
            var victim = _running.MaxBy(s => s.AdmittedAt)!;
            Preempt(victim);
            if (victim == sequence)
            {
                return false;
            }
        }
        return true;
    }

    private void Preempt(Sequence sequence)
    {
        DropCache(sequence);
        _running.Remove(sequence);
        _waiting.AddFirst(sequence);
        Preemptions++;
    }
}
