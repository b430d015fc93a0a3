using RecurFormer.Engine.Output;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Model.Caching;

namespace RecurFormer.Engine.Scheduling;

/// <summary>
/// One choice of a request as the scheduler sees it: the tokens so far (prompt + generated), how many of them are
/// in its cache, and its output state. Preemption drops the cache; the tokens stay, and are recomputed on return.
/// </summary>
internal sealed class Sequence : ISamplingState
{
    private readonly List<int> _tokens;

    public Sequence(RequestState request, int choice, TextOutput output)
    {
        Request = request;
        Choice = choice;
        _tokens = [.. request.Request.PromptTokenIds];
        PromptLength = _tokens.Count;
        var sampling = request.Request.Sampling;
        Random = sampling.Seed is { } seed ? new Random(unchecked((int)(seed + choice) ^ (int)((seed + choice) >> 32))) : null;
        Output = output;
        Constraint = request.Request.Constraint?.Invoke();
    }

    public RequestState Request { get; }
    public int Choice { get; }
    public int PromptLength { get; }
    public TextOutput Output { get; }
    public Random? Random { get; }
    public ITokenConstraint? Constraint { get; }
    public SequenceCache? Cache { get; set; }
    public bool Finished { get; set; }

    /// <summary>Order of admission; the most recently admitted is preempted first.</summary>
    public long AdmittedAt { get; set; }

    /// <summary>Prompt log-probabilities gathered chunk by chunk, until sent (then null).</summary>
    public List<TokenLogprob?>? PromptLogprobs { get; set; }

    public IReadOnlyList<int> Tokens => _tokens;
    public int Generated => _tokens.Count - PromptLength;

    /// <summary>Tokens in the cache.</summary>
    public int Computed => Cache?.Length ?? 0;

    /// <summary>Tokens still to feed before the next one can be sampled (1 while decoding).</summary>
    public int Remaining => _tokens.Count - Computed;

    public long[] NextTokens(int count) => _tokens.Skip(Computed).Take(count).Select(t => (long)t).ToArray();

    public void Append(int token) => _tokens.Add(token);

    public SamplingParams Params => Request.Request.Sampling;
    public IReadOnlyList<int> PromptTokenIds => Request.Request.PromptTokenIds;
    public IReadOnlyList<int> OutputTokenIds => _tokens.GetRange(PromptLength, Generated);

    public IReadOnlyCollection<int> Suppressed => Generated < Params.MinTokens ? Request.StopTokenIds : [];

    /// <summary>End-of-sequence ids this choice may end with (what a constraint allows once complete).</summary>
    public IReadOnlySet<int> StopTokenIds => Request.StopTokenIds;
}
