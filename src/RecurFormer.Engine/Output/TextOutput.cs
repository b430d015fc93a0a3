using System.Text;
using RecurFormer.Tokenization;

namespace RecurFormer.Engine.Output;

/// <summary>
/// Turns one choice's tokens into text deltas: UTF-8-safe incremental detokenisation (special tokens skipped),
/// and stop strings matched on the text, across token boundaries. Text that could still become a stop string is
/// held back; a matched stop string and everything after it is never emitted. The deltas concatenate to the
/// decoded text, cut before the first stop string.
/// </summary>
internal sealed class TextOutput(CheckpointTokenizer? tokenizer, IReadOnlyList<string> stops)
{
    private readonly IncrementalDetokenizer? _detokenizer = tokenizer?.CreateDetokenizer(skipSpecialTokens: true);
    private readonly StringBuilder _pending = new();

    /// <summary>All text emitted so far.</summary>
    public StringBuilder Emitted { get; } = new();

    /// <summary>
    /// Adds a token; returns the text now safe to emit and whether a stop string was reached. With
    /// <paramref name="checkStops"/> false (before min_tokens, as vLLM does) stop strings are ordinary text.
    /// </summary>
    public (string Delta, bool Stopped) Add(int token, bool checkStops = true)
    {
        if (_detokenizer is null)
        {
            return ("", false);
        }
        _pending.Append(_detokenizer.Add(token));
        return checkStops ? Release() : (Emit(_pending.ToString(), _pending.Length), false);
    }

    /// <summary>The end of the choice (not by a stop string): whatever was held back is final.</summary>
    public string Finish()
    {
        if (_detokenizer is not null)
        {
            _pending.Append(_detokenizer.Flush());
        }
        var (delta, _) = Release(final: true);
        return delta;
    }

    private (string Delta, bool Stopped) Release(bool final = false)
    {
        var pending = _pending.ToString();
        var stopAt = -1;
        foreach (var stop in stops)
        {
            var at = pending.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (stopAt < 0 || at < stopAt))
            {
                stopAt = at;
            }
        }
        if (stopAt >= 0)
        {
            return (Emit(pending[..stopAt], pending.Length), true);
        }
        var hold = final ? 0 : stops.Select(stop => HeldBack(pending, stop)).DefaultIfEmpty(0).Max();
        return (Emit(pending[..(pending.Length - hold)], pending.Length - hold), false);
    }

    private string Emit(string text, int consumed)
    {
        _pending.Remove(0, consumed);
        Emitted.Append(text);
        return text;
    }

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of <paramref name="stop"/>.</summary>
    private static int HeldBack(string text, string stop)
    {
        for (var k = Math.Min(stop.Length - 1, text.Length); k > 0; k--)
        {
            if (string.CompareOrdinal(text, text.Length - k, stop, 0, k) == 0)
            {
                return k;
            }
        }
        return 0;
    }
}
