using System.Globalization;
using System.Text;
using RecurFormer.StructuredOutput.Grammars;

namespace RecurFormer.StructuredOutput.Regex;

/// <summary>How matched characters are written: as UTF-8, or as they appear inside a JSON string (escaped where JSON requires).</summary>
public enum CharEncoding { Utf8, JsonString }

/// <summary>
/// Regular expressions (the ECMAScript/Python subset that JSON Schema patterns and vLLM's <c>guided_regex</c> use) to
/// byte-level grammar: literals, classes, escapes (\d \w \s \xHH \uHHHH …), groups, alternation, greedy or lazy
/// quantifiers, anchors at the ends. What a finite automaton cannot do (backreferences, lookaround, word boundaries)
/// is refused with a message naming it.
/// </summary>
public static class RegexCompiler
{
    /// <summary>Largest repetition count accepted in <c>{m,n}</c>.</summary>
    public const int MaxRepeat = 4096;

    /// <summary>The whole output must match (vLLM's guided_regex).</summary>
    public static Node FullMatch(string pattern, CharEncoding encoding = CharEncoding.Utf8)
    {
        var (node, _, _) = Parse(pattern);
        return ToBytes(node, encoding);
    }

    /// <summary>
    /// JSON Schema's <c>pattern</c>: the string must contain a match (the pattern is not anchored unless it says so),
    /// characters written as inside a JSON string.
    /// </summary>
    public static Node Search(string pattern)
    {
        var (node, anchoredStart, anchoredEnd) = Parse(pattern);
        var any = Rx.Star(Rx.Class([(0, Utf8.MaxCodePoint)]));
        var items = new List<Rx>();
        if (!anchoredStart)
        {
            items.Add(any);
        }
        items.Add(node);
        if (!anchoredEnd)
        {
            items.Add(any);
        }
        return ToBytes(new RxSeq(items), CharEncoding.JsonString);
    }

    private static (Rx Node, bool AnchoredStart, bool AnchoredEnd) Parse(string pattern)
    {
        var parser = new Parser(pattern);
        var anchoredStart = parser.TryConsume('^');
        var node = parser.ParseAlternation(topLevel: true);
        var anchoredEnd = parser.EndAnchored;
        if (!parser.AtEnd)
        {
            throw parser.Error($"unexpected '{parser.Peek()}'");
        }
        return (node, anchoredStart, anchoredEnd);
    }

    // ---- character-level syntax tree ----

    internal abstract record Rx
    {
        public static Rx Class(List<(int, int)> ranges) => new RxClass(ranges);
        public static Rx Star(Rx item) => new RxRepeat(item, 0, RepeatNode.Unbounded);
    }

    internal sealed record RxClass(List<(int Lo, int Hi)> Ranges) : Rx;
    internal sealed record RxSeq(List<Rx> Items) : Rx;
    internal sealed record RxAlt(List<Rx> Options) : Rx;
    internal sealed record RxRepeat(Rx Item, int Min, int Max) : Rx;

    private static Node ToBytes(Rx rx, CharEncoding encoding) => rx switch
    {
        RxClass c => encoding == CharEncoding.Utf8 ? Utf8.Ranges(c.Ranges) : JsonChars(c.Ranges),
        RxSeq s => Node.Seq(s.Items.Select(i => ToBytes(i, encoding)).ToArray()),
        RxAlt a => Node.Alt(a.Options.Select(o => ToBytes(o, encoding)).ToArray()),
        RxRepeat r => new RepeatNode(ToBytes(r.Item, encoding), r.Min, r.Max),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>Characters as JSON writes them inside a string: <c>"</c>, <c>\</c> and control characters escaped, the rest UTF-8.</summary>
    internal static Node JsonChars(List<(int Lo, int Hi)> ranges)
    {
        var plain = new List<(int, int)>();
        var escaped = new List<Node>();
        foreach (var (lo, hi) in Normalize(ranges))
        {
            var start = lo;
            for (var c = lo; c <= hi && c < 0x80; c++)
            {
                if (c < 0x20 || c == '"' || c == '\\')
                {
                    if (start < c)
                    {
                        plain.Add((start, c - 1));
                    }
                    escaped.Add(Node.Literal(JsonEscape(c)));
                    start = c + 1;
                }
            }
            if (start <= hi)
            {
                plain.Add((start, hi));
            }
        }
        var options = new List<Node>();
        if (plain.Count > 0)
        {
            options.Add(Utf8.Ranges(plain));
        }
        options.AddRange(escaped);
        return options.Count switch
        {
            0 => throw new StructuredOutputException("a character class matches no character"),
            _ => Node.Alt([.. options]),
        };
    }

    private static string JsonEscape(int c) => c switch
    {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\b' => "\\b",
        '\f' => "\\f",
        _ => $"\\u{c:x4}",
    };

    internal static List<(int Lo, int Hi)> Normalize(IEnumerable<(int Lo, int Hi)> ranges)
    {
        var sorted = ranges.Where(r => r.Lo <= r.Hi).OrderBy(r => r.Lo).ToList();
        var merged = new List<(int Lo, int Hi)>();
        foreach (var r in sorted)
        {
            if (merged.Count > 0 && r.Lo <= merged[^1].Hi + 1)
            {
                merged[^1] = (merged[^1].Lo, Math.Max(merged[^1].Hi, r.Hi));
            }
            else
            {
                merged.Add(r);
            }
        }
        return merged;
    }

    internal static List<(int Lo, int Hi)> Complement(IEnumerable<(int Lo, int Hi)> ranges)
    {
        var result = new List<(int, int)>();
        var next = 0;
        foreach (var (lo, hi) in Normalize(ranges))
        {
            if (lo > next)
            {
                result.Add((next, lo - 1));
            }
            next = hi + 1;
        }
        if (next <= Utf8.MaxCodePoint)
        {
            result.Add((next, Utf8.MaxCodePoint));
        }
        return result;
    }

    private static readonly List<(int, int)> Digits = [('0', '9')];
    private static readonly List<(int, int)> Word = [('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
    private static readonly List<(int, int)> Space = [('\t', '\r'), (' ', ' '), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)];

    private sealed class Parser(string pattern)
    {
        private readonly int[] _chars = ToCodePoints(pattern);
        private int _at;

        public bool EndAnchored { get; private set; }

        public bool AtEnd => _at >= _chars.Length;

        public char Peek() => AtEnd ? '\0' : (char)_chars[_at];

        public StructuredOutputException Error(string message) => new($"regular expression {Quote(pattern)}: {message} at position {_at}");

        private static string Quote(string text) => text.Length <= 80 ? $"'{text}'" : $"'{text[..80]}…'";

        private static int[] ToCodePoints(string text)
        {
            var list = new List<int>(text.Length);
            foreach (var rune in text.EnumerateRunes())
            {
                list.Add(rune.Value);
            }
            return [.. list];
        }

        public bool TryConsume(char c)
        {
            if (!AtEnd && _chars[_at] == c)
            {
                _at++;
                return true;
            }
            return false;
        }

        public Rx ParseAlternation(bool topLevel)
        {
            var options = new List<Rx> { ParseSequence(topLevel) };
            while (TryConsume('|'))
            {
                if (topLevel && EndAnchored)
                {
                    throw Error("'$' is only supported at the end of the whole expression");
                }
                options.Add(ParseSequence(topLevel));
            }
            return options.Count == 1 ? options[0] : new RxAlt(options);
        }

        private Rx ParseSequence(bool topLevel)
        {
            var items = new List<Rx>();
            while (!AtEnd && Peek() is not ('|' or ')'))
            {
                if (Peek() == '$')
                {
                    _at++;
                    if (topLevel && AtEnd)
                    {
                        EndAnchored = true;
                        break;
                    }
                    throw Error("'$' is only supported at the end of the expression");
                }
                if (Peek() == '^')
                {
                    throw Error("'^' is only supported at the start of the expression");
                }
                items.Add(ParseQuantified());
            }
            return items.Count == 1 ? items[0] : new RxSeq(items);
        }

        private Rx ParseQuantified()
        {
            var atom = ParseAtom();
            while (!AtEnd)
            {
                int min, max;
                switch (Peek())
                {
                    case '*': _at++; (min, max) = (0, RepeatNode.Unbounded); break;
                    case '+': _at++; (min, max) = (1, RepeatNode.Unbounded); break;
                    case '?': _at++; (min, max) = (0, 1); break;
                    case '{' when TryParseBraces(out min, out max): break;
                    default: return atom;
                }
                // Lazy (?) and possessive (+) forms match the same strings.
                if (!TryConsume('?'))
                {
                    TryConsume('+');
                }
                atom = new RxRepeat(atom, min, max);
            }
            return atom;
        }

        private bool TryParseBraces(out int min, out int max)
        {
            var save = _at;
            _at++;
            min = max = 0;
            if (!TryNumber(out min))
            {
                _at = save;
                return false; // a literal '{', as in most engines
            }
            if (TryConsume(','))
            {
                max = TryNumber(out var upper) ? upper : RepeatNode.Unbounded;
            }
            else
            {
                max = min;
            }
            if (!TryConsume('}'))
            {
                _at = save;
                return false;
            }
            if (min > MaxRepeat || max > MaxRepeat)
            {
                throw Error($"repetition counts above {MaxRepeat} are not supported");
            }
            if (max != RepeatNode.Unbounded && max < min)
            {
                throw Error($"{{{min},{max}}}: the maximum is below the minimum");
            }
            return true;
        }

        private bool TryNumber(out int value)
        {
            var start = _at;
            value = 0;
            while (!AtEnd && Peek() is >= '0' and <= '9')
            {
                value = Math.Min(value * 10 + (Peek() - '0'), MaxRepeat + 1);
                _at++;
            }
            return _at > start;
        }

        private Rx ParseAtom()
        {
            var c = _chars[_at++];
            switch (c)
            {
                case '(':
                    if (TryConsume('?'))
                    {
                        if (TryConsume(':'))
                        {
                        }
                        else if (Peek() is '<' or 'P' && !LookaroundBehind())
                        {
                            if (Peek() == 'P')
                            {
                                _at++;
                            }
                            _at++; // '<'
                            while (!AtEnd && Peek() != '>')
                            {
                                _at++;
                            }
                            if (!TryConsume('>'))
                            {
                                throw Error("unterminated group name");
                            }
                        }
                        else
                        {
                            throw Error("lookaround, inline flags and other (?...) groups are not supported");
                        }
                    }
                    var inner = AtEnd || Peek() == ')' ? new RxSeq([]) : ParseAlternation(topLevel: false);
                    if (!TryConsume(')'))
                    {
                        throw Error("missing ')'");
                    }
                    return inner;
                case ')':
                    throw Error("unbalanced ')'");
                case '[':
                    return ParseClass();
                case '.':
                    return Rx.Class(Complement([('\n', '\n'), ('\r', '\r'), (0x2028, 0x2029)]));
                case '*' or '+' or '?':
                    throw Error($"nothing to repeat before '{(char)c}'");
                case '\\':
                    return Rx.Class(ParseEscape(inClass: false));
                default:
                    return Rx.Class([(c, c)]);
            }
        }

        private bool LookaroundBehind() => _at + 1 < _chars.Length && _chars[_at] == '<' && _chars[_at + 1] is '=' or '!';

        private RxClass ParseClass()
        {
            var negate = TryConsume('^');
            var ranges = new List<(int, int)>();
            var first = true;
            while (!AtEnd && (Peek() != ']' || first))
            {
                first = false;
                var lo = ClassAtom(out var single);
                if (single is not null && Peek() == '-' && _at + 1 < _chars.Length && _chars[_at + 1] != ']')
                {
                    _at++;
                    var hiAtom = ClassAtom(out var hiSingle);
                    if (hiSingle is null)
                    {
                        throw Error("a class escape cannot end a range");
                    }
                    if (hiSingle < single)
                    {
                        throw Error("a range whose end is before its start");
                    }
                    ranges.Add((single.Value, hiSingle.Value));
                    continue;
                }
                ranges.AddRange(lo);
            }
            if (!TryConsume(']'))
            {
                throw Error("missing ']'");
            }
            return new RxClass(negate ? Complement(ranges) : Normalize(ranges));
        }

        private List<(int Lo, int Hi)> ClassAtom(out int? single)
        {
            var c = _chars[_at++];
            if (c == '\\')
            {
                var set = ParseEscape(inClass: true);
                single = set is [var (lo, hi)] && lo == hi ? lo : null;
                return set;
            }
            single = c;
            return [(c, c)];
        }

        private List<(int Lo, int Hi)> ParseEscape(bool inClass)
        {
            if (AtEnd)
            {
                throw Error("a trailing backslash");
            }
            var c = _chars[_at++];
            return c switch
            {
                'd' => Digits,
                'D' => Complement(Digits),
                'w' => Word,
                'W' => Complement(Word),
                's' => Space,
                'S' => Complement(Space),
                'n' => [('\n', '\n')],
                'r' => [('\r', '\r')],
                't' => [('\t', '\t')],
                'f' => [('\f', '\f')],
                'v' => [('\v', '\v')],
                '0' => [(0, 0)],
                'b' when inClass => [('\b', '\b')],
                'x' => Single(Hex(2)),
                'u' when TryConsume('{') => Single(HexUntilBrace()),
                'u' => Single(Hex(4)),
                'b' or 'B' => throw Error("word boundaries (\\b, \\B) are not supported"),
                >= '1' and <= '9' => throw Error("backreferences are not supported"),
                'p' or 'P' => throw Error("Unicode property classes (\\p{…}) are not supported"),
                'A' or 'Z' or 'z' or 'G' => throw Error($"the anchor \\{(char)c} is not supported"),
                _ when c < 128 && char.IsAsciiLetterOrDigit((char)c) => throw Error($"unknown escape \\{(char)c}"),
                _ => [(c, c)],
            };
        }

        private static List<(int, int)> Single(int c) => [(c, c)];

        private int Hex(int digits)
        {
            if (_at + digits > _chars.Length)
            {
                throw Error("an incomplete hex escape");
            }
            var text = new string(_chars.Skip(_at).Take(digits).Select(x => (char)x).ToArray());
            if (!int.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value))
            {
                throw Error($"'{text}' is not hexadecimal");
            }
            _at += digits;
            return value;
        }

        private int HexUntilBrace()
        {
            var text = new StringBuilder();
            while (!AtEnd && Peek() != '}')
            {
                text.Append(Peek());
                _at++;
            }
            if (!TryConsume('}') || !int.TryParse(text.ToString(), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value) || value > Utf8.MaxCodePoint)
            {
                throw Error("a bad \\u{…} escape");
            }
            return value;
        }
    }
}
