using RecurFormer.Engine.Caching;
using RecurFormer.Engine.Output;
using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Scheduling;

/// <summary>
/// One choice of a request as the scheduler sees it: the tokens so far (prompt + generated), how many of them are
/// in its cache, and its output state. Preemption drops the cache; the tokens stay, and are recomputed on return.
/// </summary>
internal sealed class Sequence : ISamplingState, IDisposable
{
    private readonly List<int> _tokens;

    public Sequence(RequestState request, int choice, IReadOnlyList<int> tokens, int promptLength, Generator? random, TextOutput output)
    {
        Request = request;
        Choice = choice;
        _tokens = [.. tokens];
        PromptLength = promptLength;
        Random = random;
        Output = output;
    }

    public RequestState Request { get; }
    public int Choice { get; }
    public int PromptLength { get; }
    public TextOutput Output { get; }
    public Generator? Random { get; }
    public PagedSequenceCache? Cache { get; set; }
    public bool Finished { get; set; }

    /// <summary>Order of admission; the most recently admitted is preempted first.</summary>
    public long AdmittedAt { get; set; }

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

    /// <summary>Frees the cache (finish, cancellation or preemption).</summary>
    public void DropCache()
    {
        Cache?.Dispose();
        Cache = null;
    }

    public void Dispose()
    {
        DropCache();
        Random?.Dispose();
    }
}
