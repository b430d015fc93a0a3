namespace RecurFormer.Engine.Requests;

/// <summary>What the engine reports about a request, in order, on the request's stream.</summary>
public abstract record EngineEvent(int Choice);

/// <summary>The request left the waiting queue and started prefill.</summary>
public sealed record ScheduledEvent() : EngineEvent(0);

/// <summary>
/// One generated token of one choice and the text that is now safe to emit (possibly empty: half a UTF-8
/// character, or text that may be the start of a stop string, is held back).
/// </summary>
public sealed record TokenEvent(int Choice, int TokenId, string Text, TokenLogprob? Logprob) : EngineEvent(Choice);

/// <summary>
/// The prompt's log-probabilities (when <see cref="SamplingParams.PromptLogprobs"/> is set), one entry per prompt
/// token: null for the first (nothing precedes it), then the token's log-probability given the tokens before it and
/// the most likely alternatives. Sent once per request, before its first <see cref="TokenEvent"/>.
/// </summary>
public sealed record PromptLogprobsEvent(IReadOnlyList<TokenLogprob?> Logprobs) : EngineEvent(0);

/// <summary>A choice ended; <see cref="Text"/> is any held-back text that is now final.</summary>
public sealed record FinishedEvent(int Choice, FinishReason Reason, string Text, Usage Usage, RequestTimings Timings) : EngineEvent(Choice);

/// <summary>The request failed inside the engine; every unfinished choice ends here.</summary>
public sealed record ErrorEvent(string Message) : EngineEvent(0);

public enum FinishReason { Stop, Length, Abort }

/// <summary>Token counts of a whole request (prompt counted once; completion over all its choices so far).</summary>
public sealed record Usage(int PromptTokens, int CompletionTokens)
{
    public int TotalTokens => PromptTokens + CompletionTokens;
}

/// <summary>Log-probability of the chosen token and of the most likely alternatives (model distribution, before sampling controls).</summary>
public sealed record TokenLogprob(int TokenId, double Logprob, IReadOnlyList<(int TokenId, double Logprob)> Top);

/// <summary>When things happened to a request (Stopwatch timestamps converted to seconds since arrival).</summary>
public sealed record RequestTimings(double QueueSeconds, double TimeToFirstTokenSeconds, double EndToEndSeconds);
