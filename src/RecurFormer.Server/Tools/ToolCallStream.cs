using System.Text;
using System.Text.Json;

namespace RecurFormer.Server.Tools;

/// <summary>What the parser finds in the model's output, in order: plain text, the start of a call, a piece of its arguments.</summary>
public abstract record ToolStreamItem;

public sealed record ContentItem(string Text) : ToolStreamItem;

public sealed record CallStartItem(int Index, string Id, string Name) : ToolStreamItem;

public sealed record CallArgumentsItem(int Index, string Text) : ToolStreamItem;

/// <summary>A complete call: its arguments are JSON text, as OpenAI returns them.</summary>
public sealed record ParsedToolCall(string Id, string Name, string Arguments);

/// <summary>
/// Reads a model's output as it is generated and separates text from tool calls written in a <see cref="ToolCallFormat"/>:
/// text outside calls comes out as soon as it cannot be the start of a call marker, a call's name as soon as it is
/// complete, and its arguments piece by piece while they are written (the streamed deltas of OpenAI's API). The
/// non-streamed answer is the same pass over the whole text (<see cref="Parse"/>), so both agree. One per choice.
/// </summary>
public sealed class ToolCallStream(ToolCallFormat format)
{
    private enum Mode { Start, Text, BeforeCall, InCall, AfterCall, AfterCalls }

    private readonly StringBuilder _pending = new();
    private Mode _mode = format.OnlyAtStart ? Mode.Start : Mode.Text;
    private CallScanner? _call;
    private int _arrayDepth;
    private readonly List<(string Id, string? Name, StringBuilder Raw, CallScanner Scanner)> _calls = [];

    /// <summary>Every call found so far (complete or not).</summary>
    public int CallCount => _calls.Count;

    /// <summary>True when the output ended inside a call (cut by max_tokens, or malformed).</summary>
    public bool EndedInsideCall { get; private set; }

    public List<ToolStreamItem> Feed(string text)
    {
        var items = new List<ToolStreamItem>();
        _pending.Append(text);
        Process(items, final: false);
        return items;
    }

    public List<ToolStreamItem> Finish()
    {
        var items = new List<ToolStreamItem>();
        Process(items, final: true);
        if (_mode is Mode.InCall or Mode.BeforeCall)
        {
            EndedInsideCall = true;
        }
        if (_pending.Length > 0)
        {
            items.Add(new ContentItem(_pending.ToString()));
            _pending.Clear();
        }
        return items;
    }

    /// <summary>The whole output at once: its text (null when only whitespace) and calls; malformed calls leave everything as text.</summary>
    public static (string? Content, List<ParsedToolCall> Calls) Parse(ToolCallFormat format, string output)
    {
        var stream = new ToolCallStream(format);
        var items = stream.Feed(output);
        items.AddRange(stream.Finish());
        var content = string.Concat(items.OfType<ContentItem>().Select(c => c.Text));
        var calls = stream.CompleteCalls();
        if (stream.EndedInsideCall || calls is null)
        {
            return (output, []); // as vLLM: a call that does not parse is returned as text
        }
        return (string.IsNullOrWhiteSpace(content) ? null : content.Trim(), calls);
    }

    /// <summary>The calls with their arguments as JSON text; null when one of them is not valid JSON.</summary>
    public List<ParsedToolCall>? CompleteCalls()
    {
        var result = new List<ParsedToolCall>();
        foreach (var (id, name, _, scanner) in _calls)
        {
            if (name is null || !scanner.Complete)
            {
                return null;
            }
            var arguments = scanner.Arguments ?? "{}";
            try
            {
                using var _ = JsonDocument.Parse(arguments);
            }
            catch (JsonException)
            {
                return null;
            }
            result.Add(new ParsedToolCall(id, name, arguments));
        }
        return result;
    }

    private void Process(List<ToolStreamItem> items, bool final)
    {
        while (true)
        {
            var progressed = _mode switch
            {
                Mode.Start => ProcessStart(final),
                Mode.Text => ProcessText(items, final),
                Mode.BeforeCall => ProcessBeforeCall(items),
                Mode.InCall => ProcessCall(items),
                Mode.AfterCall => ProcessAfterCall(final),
                Mode.AfterCalls => ProcessText(items, final),
                _ => false,
            };
            if (!progressed)
            {
                return;
            }
        }
    }

    /// <summary>Formats whose calls are the whole answer: decide from its first characters whether this is a call.</summary>
    private bool ProcessStart(bool final)
    {
        var text = _pending.ToString();
        var trimmed = text.TrimStart();
        if (trimmed.Length == 0 && !final)
        {
            return false;
        }
        if (format.Marker is { } marker && trimmed.Length < marker.Length && marker.StartsWith(trimmed, StringComparison.Ordinal) && !final)
        {
            return false;
        }
        if (format.Marker is { } m && trimmed.StartsWith(m, StringComparison.Ordinal))
        {
            _pending.Clear().Append(trimmed[m.Length..]);
            _mode = Mode.BeforeCall;
            return true;
        }
        if (trimmed.StartsWith('{'))
        {
            _pending.Clear().Append(trimmed);
            _mode = Mode.BeforeCall;
            return true;
        }
        _mode = Mode.AfterCalls; // plain text: no marker will be looked for
        return true;
    }

    private bool ProcessText(List<ToolStreamItem> items, bool final)
    {
        if (_pending.Length == 0)
        {
            return false;
        }
        var text = _pending.ToString();
        if (_mode == Mode.AfterCalls || format.OnlyAtStart || format.Marker is null)
        {
            items.Add(new ContentItem(text));
            _pending.Clear();
            return false;
        }
        var marker = format.Marker;
        var at = text.IndexOf(marker, StringComparison.Ordinal);
        if (at >= 0)
        {
            if (at > 0)
            {
                items.Add(new ContentItem(text[..at]));
            }
            _pending.Clear().Append(text[(at + marker.Length)..]);
            _mode = Mode.BeforeCall;
            return true;
        }
        // Hold back what could still become the marker.
        var keep = final ? 0 : PartialMarkerLength(text, marker);
        if (text.Length > keep)
        {
            items.Add(new ContentItem(text[..^keep]));
            _pending.Remove(0, text.Length - keep);
        }
        return false;
    }

    private static int PartialMarkerLength(string text, string marker)
    {
        for (var length = Math.Min(marker.Length - 1, text.Length); length > 0; length--)
        {
            if (text.AsSpan(text.Length - length).SequenceEqual(marker.AsSpan(0, length)))
            {
                return length;
            }
        }
        return 0;
    }

    private bool ProcessBeforeCall(List<ToolStreamItem> items)
    {
        var skip = 0;
        while (skip < _pending.Length && char.IsWhiteSpace(_pending[skip]))
        {
            skip++;
        }
        if (skip == _pending.Length)
        {
            _pending.Clear();
            return false;
        }
        if (format.CallsInArray && _arrayDepth == 0)
        {
            if (_pending[skip] != '[')
            {
                return Malformed(items);
            }
            _arrayDepth = 1;
            _pending.Remove(0, skip + 1);
            return true;
        }
        if (_pending[skip] != '{')
        {
            return Malformed(items);
        }
        _pending.Remove(0, skip);
        _call = new CallScanner(format.ArgumentsKey);
        _calls.Add((format.NewCallId(), null, new StringBuilder(), _call));
        _mode = Mode.InCall;
        return true;
    }

    /// <summary>Not a call after all (unconstrained output): the rest is text.</summary>
    private bool Malformed(List<ToolStreamItem> items)
    {
        EndedInsideCall = true;
        _mode = Mode.AfterCalls;
        return _pending.Length > 0;
    }

    private bool ProcessCall(List<ToolStreamItem> items)
    {
        if (_pending.Length == 0)
        {
            return false;
        }
        var index = _calls.Count - 1;
        var (id, name, raw, scanner) = _calls[index];
        var consumed = scanner.Feed(_pending.ToString());
        raw.Append(_pending.ToString(0, consumed));
        _pending.Remove(0, consumed);
        if (name is null && scanner.Name is { } found)
        {
            name = found;
            _calls[index] = (id, name, raw, scanner);
            items.Add(new CallStartItem(index, id, name));
        }
        if (name is not null && scanner.TakeArgumentsDelta() is { Length: > 0 } delta)
        {
            items.Add(new CallArgumentsItem(index, delta));
        }
        if (scanner.Complete)
        {
            _mode = Mode.AfterCall;
            return true;
        }
        return false;
    }

    private bool ProcessAfterCall(bool final)
    {
        var text = _pending.ToString();
        var trimmed = text.TrimStart();
        if (format.Closer is { } closer)
        {
            if (trimmed.StartsWith(closer, StringComparison.Ordinal))
            {
                _pending.Clear().Append(trimmed[closer.Length..]);
                _mode = Mode.Text;
                return true;
            }
            if (!final && closer.StartsWith(trimmed, StringComparison.Ordinal))
            {
                return false;
            }
            _mode = Mode.Text; // a missing closer is forgiven
            return trimmed.Length != text.Length || _pending.Length > 0;
        }
        if (trimmed.Length == 0 && !final)
        {
            return false;
        }
        if (format.Separator is { } separator && trimmed.StartsWith(separator, StringComparison.Ordinal))
        {
            _pending.Clear().Append(trimmed[separator.Length..]);
            _mode = Mode.BeforeCall;
            return true;
        }
        if (format.CallsInArray && trimmed.StartsWith(']'))
        {
            _arrayDepth = 0;
            _pending.Clear().Append(trimmed[1..]);
            _mode = Mode.AfterCalls;
            return true;
        }
        _mode = Mode.AfterCalls;
        _pending.Clear().Append(trimmed);
        return _pending.Length > 0;
    }

    /// <summary>
    /// Scans one call object character by character: where its <c>name</c> string ends, where the arguments value
    /// starts and ends (so that it can be streamed as written), and when the object closes.
    /// </summary>
    private sealed class CallScanner(string argumentsKey)
    {
        private readonly StringBuilder _text = new();
        private int _depth;
        private bool _inString;
        private bool _escape;
        private bool _expectKey = true;
        private int _keyStart = -1;
        private string? _key;
        private int _valueStart = -1;
        private int _argumentsStart = -1;
        private int _argumentsEnd = -1;
        private int _argumentsSent;
        private bool _argumentsIsString;

        public string? Name { get; private set; }
        public bool Complete { get; private set; }

        /// <summary>The arguments as JSON text (a JSON string value is decoded: some models write the arguments quoted).</summary>
        public string? Arguments => _argumentsStart < 0 || _argumentsEnd < 0 ? null
            : _argumentsIsString ? JsonSerializer.Deserialize<string>(_text.ToString(_argumentsStart, _argumentsEnd - _argumentsStart))
            : _text.ToString(_argumentsStart, _argumentsEnd - _argumentsStart).TrimEnd();

        /// <summary>Consumes characters until the object closes; returns how many were consumed.</summary>
        public int Feed(string chunk)
        {
            for (var i = 0; i < chunk.Length; i++)
            {
                var c = chunk[i];
                var at = _text.Length;
                _text.Append(c);
                if (_inString)
                {
                    if (_escape)
                    {
                        _escape = false;
                    }
                    else if (c == '\\')
                    {
                        _escape = true;
                    }
                    else if (c == '"')
                    {
                        _inString = false;
                        if (_depth == 1 && _keyStart >= 0)
                        {
                            _key = Decode(_keyStart, at + 1);
                            _keyStart = -1;
                        }
                        else if (_depth == 1 && _valueStart >= 0)
                        {
                            EndValue(at + 1);
                        }
                    }
                    continue;
                }
                switch (c)
                {
                    case '"':
                        _inString = true;
                        if (_depth == 1 && _expectKey)
                        {
                            _keyStart = at;
                        }
                        else if (_depth == 1)
                        {
                            StartValue(at, isString: true);
                        }
                        break;
                    case '{' or '[':
                        if (_depth == 1 && !_expectKey)
                        {
                            StartValue(at, isString: false);
                        }
                        _depth++;
                        break;
                    case '}' or ']':
                        _depth--;
                        if (_depth == 1 && _valueStart >= 0)
                        {
                            EndValue(at + 1);
                        }
                        else if (_depth == 0)
                        {
                            if (_valueStart >= 0)
                            {
                                EndValue(at);
                            }
                            Complete = true;
                            return i + 1;
                        }
                        break;
                    case ':' when _depth == 1:
                        _expectKey = false;
                        break;
                    case ',' when _depth == 1:
                        if (_valueStart >= 0)
                        {
                            EndValue(at);
                        }
                        _expectKey = true;
                        break;
                    default:
                        if (_depth == 1 && !_expectKey && !char.IsWhiteSpace(c) && _valueStart < 0)
                        {
                            StartValue(at, isString: false); // a number, true, false or null
                        }
                        break;
                }
            }
            return chunk.Length;
        }

        private void StartValue(int at, bool isString)
        {
            if (_valueStart >= 0)
            {
                return;
            }
            _valueStart = at;
            if (_key == argumentsKey || _key == "arguments" || _key == "parameters")
            {
                _argumentsStart = at;
                _argumentsSent = at;
                _argumentsIsString = isString;
            }
        }

        private void EndValue(int end)
        {
            if (_key == "name" && _valueStart >= 0 && _text[_valueStart] == '"')
            {
                Name ??= Decode(_valueStart, end);
            }
            if (_argumentsStart == _valueStart && _argumentsStart >= 0 && _argumentsEnd < 0)
            {
                _argumentsEnd = end;
            }
            _valueStart = -1;
            _expectKey = false;
        }

        /// <summary>Arguments text written since the last call (nothing for a quoted value until it is complete).</summary>
        public string? TakeArgumentsDelta()
        {
            if (_argumentsStart < 0)
            {
                return null;
            }
            if (_argumentsIsString)
            {
                if (_argumentsEnd < 0 || _argumentsSent > _argumentsEnd)
                {
                    return null;
                }
                _argumentsSent = _argumentsEnd + 1;
                return Arguments;
            }
            var end = _argumentsEnd >= 0 ? _argumentsEnd : _text.Length;
            if (end <= _argumentsSent)
            {
                return null;
            }
            var delta = _text.ToString(_argumentsSent, end - _argumentsSent);
            _argumentsSent = end;
            return delta;
        }

        private string? Decode(int start, int end)
        {
            try
            {
                return JsonSerializer.Deserialize<string>(_text.ToString(start, end - start));
            }
            catch (JsonException)
            {
                return null;
            }
        }
    }
}
