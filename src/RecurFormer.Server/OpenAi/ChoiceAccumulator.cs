using System.Diagnostics;
using System.Text;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Tokenization;

namespace RecurFormer.Server.OpenAi;

/// <summary>
/// Collects a run's events into per-choice text, token logprobs and finish reasons, plus usage and the first error:
/// what a non-streamed response returns and what a stream reports at its end. Usage and TTFT also come from the token
/// events seen, so that a stream the client left (no finish event read) is still reported with what it generated.
/// </summary>
public sealed class ChoiceAccumulator(int prompts, int n, IReadOnlyDictionary<int, string>? markerTokens = null)
{
    private readonly StringBuilder[] _raw = Enumerable.Range(0, prompts * n).Select(_ => new StringBuilder()).ToArray();
    private readonly IReadOnlyList<TokenLogprob?>?[] _promptLogprobs = new IReadOnlyList<TokenLogprob?>?[prompts];
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly StringBuilder[] _text = Enumerable.Range(0, prompts * n).Select(_ => new StringBuilder()).ToArray();
    private readonly List<(int Token, TokenLogprob? Logprob)>[] _tokens = Enumerable.Range(0, prompts * n).Select(_ => new List<(int, TokenLogprob?)>()).ToArray();
    private readonly FinishReason?[] _reasons = new FinishReason?[prompts * n];
    private readonly Usage?[] _usage = new Usage?[prompts];
    private readonly int[] _tokensSeen = new int[prompts];
    private double? _engineTimeToFirstToken;
    private double? _seenTimeToFirstToken;

    public ApiException? Error { get; private set; }

    /// <summary>The engine's TTFT when a finish event said tokens were generated, else when the first token event arrived.</summary>
    public double? TimeToFirstTokenSeconds => _engineTimeToFirstToken ?? _seenTimeToFirstToken;

    /// <summary>The flat choice index OpenAI uses with several prompts: prompt × n + choice.</summary>
    public int Index(RunEvent e) => e.Prompt * n + (e.Event?.Choice ?? 0);

    public void Add(RunEvent e)
    {
        if (e.Error is not null)
        {
            Error ??= e.Error;
            return;
        }
        switch (e.Event)
        {
            case PromptLogprobsEvent prompt:
                _promptLogprobs[e.Prompt] = prompt.Logprobs;
                break;
            case TokenEvent token:
                _text[Index(e)].Append(token.Text);
                _raw[Index(e)].Append(MarkerText(markerTokens, token)).Append(token.Text);
                _tokens[Index(e)].Add((token.TokenId, token.Logprob));
                _tokensSeen[e.Prompt]++;
                _seenTimeToFirstToken ??= Stopwatch.GetElapsedTime(_started).TotalSeconds;
                break;
            case FinishedEvent finished:
                _text[Index(e)].Append(finished.Text);
                _raw[Index(e)].Append(finished.Text);
                _reasons[Index(e)] = finished.Reason;
                if (_usage[e.Prompt] is not { } seen || seen.CompletionTokens < finished.Usage.CompletionTokens)
                {
                    _usage[e.Prompt] = finished.Usage;
                }
                if (finished.Usage.CompletionTokens > 0)
                {
                    _engineTimeToFirstToken ??= finished.Timings.TimeToFirstTokenSeconds;
                }
                break;
            case ErrorEvent failed:
                Error ??= new ApiException(500, $"Generation failed: {failed.Message}", null, "generation_error", "server_error");
                break;
        }
    }

    public int Count => _text.Length;
    public string Text(int index) => _text[index].ToString();

    /// <summary>The text with the special tokens that mark tool calls written in (the engine's text leaves special tokens out).</summary>
    public string TextWithMarkers(int index) => _raw[index].ToString();

    /// <summary>The prompt's log-probabilities (one per prompt token, null first), when they were asked for and came.</summary>
    public IReadOnlyList<TokenLogprob?>? PromptLogprobs(int prompt) => _promptLogprobs[prompt];

    /// <summary>The text a special token stands for when it marks tool calls, else "".</summary>
    public static string MarkerText(IReadOnlyDictionary<int, string>? markers, TokenEvent token) =>
        markers is not null && markers.TryGetValue(token.TokenId, out var marker) ? marker : "";
    public IReadOnlyList<(int Token, TokenLogprob? Logprob)> Tokens(int index) => _tokens[index];
    public FinishReason? Reason(int index) => _reasons[index];
    public bool Aborted => _reasons.Any(r => r is FinishReason.Abort);

    public UsageInfo Usage()
    {
        var promptTokens = _usage.Sum(u => u?.PromptTokens ?? 0);
        // A stop token has no token event, so usage (when it came) counts at least as many as were seen.
        var completion = _usage.Select((u, prompt) => Math.Max(u?.CompletionTokens ?? 0, _tokensSeen[prompt])).Sum();
        return new UsageInfo(promptTokens, completion, promptTokens + completion);
    }

    /// <summary>Why a run ended without finishing (aborted but the client is still there): timeout or shutdown.</summary>
    public static ApiException AbortError(GenerationRun run, int retryAfterSeconds) => run.TimedOut
        ? new ApiException(504, "The request took longer than the server's request timeout and was cancelled", null, "request_timeout", "timeout_error")
        : new ApiException(503, "The server shut down before the request finished", null, "engine_unavailable") { RetryAfterSeconds = retryAfterSeconds };

    public static ChatTokenLogprob ChatLogprob(CheckpointTokenizer tokenizer, TokenLogprob logprob)
    {
        var (text, bytes) = TokenText(tokenizer, logprob.TokenId);
        return new ChatTokenLogprob(text, logprob.Logprob, bytes,
            logprob.Top.Select(t =>
            {
                var (topText, topBytes) = TokenText(tokenizer, t.TokenId);
                return new ChatTopLogprob(topText, t.Logprob, topBytes);
            }).ToList());
    }

    /// <summary>A token's text and UTF-8 bytes (a token may hold part of a character; its text then has U+FFFD).</summary>
    public static (string Text, int[] Bytes) TokenText(CheckpointTokenizer tokenizer, int id)
    {
        if (!tokenizer.IsValidTokenId(id))
        {
            return ("", []);
        }
        var bytes = tokenizer.GetTokenBytes(id).ToArray();
        return (Encoding.UTF8.GetString(bytes), bytes.Select(b => (int)b).ToArray());
    }

    /// <summary>
    /// The legacy logprobs shape over <paramref name="tokens"/>, text offsets counted from <paramref name="textOffset"/>.
    /// With <paramref name="promptTokens"/> (echo) the prompt's tokens come first, with their log-probabilities when
    /// known (the first has none: nothing precedes it), as OpenAI's echo returned them.
    /// </summary>
    public static CompletionLogprobs LegacyLogprobs(CheckpointTokenizer tokenizer, IReadOnlyList<(int Token, TokenLogprob? Logprob)> tokens, int textOffset,
        IReadOnlyList<int>? promptTokens = null, IReadOnlyList<TokenLogprob?>? promptLogprobs = null)
    {
        var texts = new List<string>();
        var logprobs = new List<double?>();
        var tops = new List<Dictionary<string, double>?>();
        var offsets = new List<int>();
        var offset = textOffset;
        void Add(int token, TokenLogprob? logprob, bool known)
        {
            var text = TokenText(tokenizer, token).Text;
            texts.Add(text);
            logprobs.Add(known ? logprob?.Logprob ?? 0 : null);
            Dictionary<string, double>? top = null;
            if (known)
            {
                top = new Dictionary<string, double>(StringComparer.Ordinal);
                foreach (var (id, value) in logprob?.Top ?? [])
                {
                    top.TryAdd(TokenText(tokenizer, id).Text, value);
                }
            }
            tops.Add(top);
            offsets.Add(offset);
            offset += text.Length;
        }
        for (var i = 0; i < (promptTokens?.Count ?? 0); i++)
        {
            var logprob = promptLogprobs is not null && i < promptLogprobs.Count ? promptLogprobs[i] : null;
            Add(promptTokens![i], logprob, known: logprob is not null);
        }
        foreach (var (token, logprob) in tokens)
        {
            Add(token, logprob, known: true);
        }
        return new CompletionLogprobs(texts, logprobs, tops, offsets);
    }

    /// <summary>vLLM's prompt_logprobs: per prompt token a map from token id to its log-probability, rank (when known) and text; null first.</summary>
    public static List<Dictionary<string, PromptLogprob>?> VllmPromptLogprobs(CheckpointTokenizer tokenizer, IReadOnlyList<int> prompt, IReadOnlyList<TokenLogprob?> logprobs)
    {
        var result = new List<Dictionary<string, PromptLogprob>?>(prompt.Count);
        for (var i = 0; i < prompt.Count; i++)
        {
            if (i >= logprobs.Count || logprobs[i] is not { } entry)
            {
                result.Add(null);
                continue;
            }
            var map = new Dictionary<string, PromptLogprob>(StringComparer.Ordinal);
            var rank = entry.Top.Select((t, k) => (t.TokenId, k)).Where(t => t.TokenId == entry.TokenId).Select(t => (int?)(t.k + 1)).FirstOrDefault();
            map[entry.TokenId.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new PromptLogprob(entry.Logprob, rank, TokenText(tokenizer, entry.TokenId).Text);
            for (var k = 0; k < entry.Top.Count; k++)
            {
                var (id, value) = entry.Top[k];
                map.TryAdd(id.ToString(System.Globalization.CultureInfo.InvariantCulture), new PromptLogprob(value, k + 1, TokenText(tokenizer, id).Text));
            }
            result.Add(map);
        }
        return result;
    }
}
