using System.Globalization;
using System.Text;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Regex;

namespace RecurFormer.StructuredOutput.Ebnf;

/// <summary>
/// GBNF, the EBNF dialect of llama.cpp that xgrammar (vLLM's <c>guided_grammar</c>) reads: <c>name ::= body</c>
/// rules, <c>"literals"</c> with escapes, <c>[character classes]</c>, <c>.</c>, rule references, groups, <c>|</c>,
/// and the <c>* + ? {m} {m,} {m,n}</c> quantifiers; <c>#</c> comments. Output starts at <c>root</c>.
/// </summary>
public static class GbnfCompiler
{
    public static GrammarDefinition Compile(string text)
    {
        var parser = new Parser(text);
        var rules = parser.ParseRules();
        if (rules.Count == 0)
        {
            throw new StructuredOutputException("the grammar has no rules (expected 'root ::= ...')");
        }
        if (!rules.ContainsKey("root"))
        {
            throw new StructuredOutputException("the grammar has no 'root' rule");
        }
        return new GrammarDefinition(rules, "root");
    }

    private sealed class Parser(string text)
    {
        private int _at;

        private StructuredOutputException Error(string message)
        {
            var line = text[..Math.Min(_at, text.Length)].Count(c => c == '\n') + 1;
            return new StructuredOutputException($"grammar line {line}: {message}");
        }

        public Dictionary<string, Node> ParseRules()
        {
            var rules = new Dictionary<string, Node>(StringComparer.Ordinal);
            SkipSpace(newlines: true);
            while (_at < text.Length)
            {
                var name = Name() ?? throw Error("expected a rule name");
                SkipSpace(newlines: false);
                if (!Consume("::="))
                {
                    throw Error($"expected '::=' after '{name}'");
                }
                if (rules.ContainsKey(name))
                {
                    throw Error($"the rule '{name}' is defined twice");
                }
                rules[name] = Alternatives(depth: 0);
                SkipSpace(newlines: true);
            }
            return rules;
        }

        private Node Alternatives(int depth)
        {
            var options = new List<Node> { Sequence(depth) };
            while (true)
            {
                SkipSpace(newlines: depth > 0);
                if (!Consume("|"))
                {
                    break;
                }
                SkipSpace(newlines: true);
                options.Add(Sequence(depth));
            }
            return Node.Alt([.. options]);
        }

        private Node Sequence(int depth)
        {
            var items = new List<Node>();
            while (true)
            {
                SkipSpace(newlines: depth > 0);
                if (_at >= text.Length || text[_at] is '|' or ')' || (depth == 0 && (text[_at] == '\n' || StartsRule())))
                {
                    break;
                }
                items.Add(Quantified(depth));
            }
            return Node.Seq([.. items]);
        }

        /// <summary>At top level a new line that reads "name ::=" starts the next rule.</summary>
        private bool StartsRule()
        {
            var save = _at;
            var name = Name();
            SkipSpace(newlines: false);
            var isRule = name is not null && text.AsSpan(_at).StartsWith("::=");
            _at = save;
            return isRule;
        }

        private Node Quantified(int depth)
        {
            var atom = Atom(depth);
            while (_at < text.Length)
            {
                switch (text[_at])
                {
                    case '*': _at++; atom = Node.Star(atom); continue;
                    case '+': _at++; atom = new RepeatNode(atom, 1, RepeatNode.Unbounded); continue;
                    case '?': _at++; atom = Node.Optional(atom); continue;
                    case '{':
                        _at++;
                        var min = Number();
                        var max = min;
                        if (Consume(","))
                        {
                            max = _at < text.Length && char.IsAsciiDigit(text[_at]) ? Number() : RepeatNode.Unbounded;
                        }
                        if (!Consume("}"))
                        {
                            throw Error("expected '}'");
                        }
                        if (max != RepeatNode.Unbounded && max < min)
                        {
                            throw Error($"{{{min},{max}}}: the maximum is below the minimum");
                        }
                        atom = new RepeatNode(atom, min, max);
                        continue;
                }
                break;
            }
            return atom;
        }

        private int Number()
        {
            var start = _at;
            while (_at < text.Length && char.IsAsciiDigit(text[_at]))
            {
                _at++;
            }
            if (start == _at || !int.TryParse(text.AsSpan(start, _at - start), NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value > RegexCompiler.MaxRepeat)
            {
                throw Error($"expected a repetition count up to {RegexCompiler.MaxRepeat}");
            }
            return value;
        }

        private Node Atom(int depth)
        {
            var c = text[_at];
            switch (c)
            {
                case '"':
                    _at++;
                    var literal = new StringBuilder();
                    while (_at < text.Length && text[_at] != '"')
                    {
                        literal.Append(char.ConvertFromUtf32(Char()));
                    }
                    if (!Consume("\""))
                    {
                        throw Error("unterminated string literal");
                    }
                    return Node.Literal(literal.ToString());
                case '[':
                    _at++;
                    var negate = Consume("^");
                    var ranges = new List<(int, int)>();
                    while (_at < text.Length && text[_at] != ']')
                    {
                        var lo = Char();
                        var hi = lo;
                        if (_at + 1 < text.Length && text[_at] == '-' && text[_at + 1] != ']')
                        {
                            _at++;
                            hi = Char();
                        }
                        if (hi < lo)
                        {
                            throw Error("a range whose end is before its start");
                        }
                        ranges.Add((lo, hi));
                    }
                    if (!Consume("]"))
                    {
                        throw Error("unterminated character class");
                    }
                    return Utf8.Ranges(negate ? RegexCompiler.Complement(ranges) : RegexCompiler.Normalize(ranges));
                case '.':
                    _at++;
                    return Utf8.Ranges([(0, Utf8.MaxCodePoint)]);
                case '(':
                    _at++;
                    SkipSpace(newlines: true);
                    var inner = Alternatives(depth + 1);
                    SkipSpace(newlines: true);
                    if (!Consume(")"))
                    {
                        throw Error("expected ')'");
                    }
                    return inner;
                default:
                    var name = Name() ?? throw Error($"unexpected '{c}'");
                    return new RuleNode(name);
            }
        }

        /// <summary>One character of a literal or class, with GBNF's escapes.</summary>
        private int Char()
        {
            if (_at >= text.Length)
            {
                throw Error("unexpected end of the grammar");
            }
            if (text[_at] != '\\')
            {
                var rune = System.Text.Rune.GetRuneAt(text, _at);
                _at += rune.Utf16SequenceLength;
                return rune.Value;
            }
            _at++;
            if (_at >= text.Length)
            {
                throw Error("a trailing backslash");
            }
            var e = text[_at++];
            return e switch
            {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '\\' or '"' or '[' or ']' or '-' or '^' => e,
                'x' => Hex(2),
                'u' => Hex(4),
                'U' => Hex(8),
                _ => throw Error($"unknown escape '\\{e}'"),
            };
        }

        private int Hex(int digits)
        {
            if (_at + digits > text.Length || !int.TryParse(text.AsSpan(_at, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value) || value > Utf8.MaxCodePoint)
            {
                throw Error("a bad hex escape");
            }
            _at += digits;
            return value;
        }

        private string? Name()
        {
            var start = _at;
            while (_at < text.Length && (char.IsAsciiLetterOrDigit(text[_at]) || text[_at] is '_' or '-'))
            {
                _at++;
            }
            return _at > start ? text[start.._at] : null;
        }

        private bool Consume(string token)
        {
            if (text.AsSpan(_at).StartsWith(token, StringComparison.Ordinal))
            {
                _at += token.Length;
                return true;
            }
            return false;
        }

        private void SkipSpace(bool newlines)
        {
            while (_at < text.Length)
            {
                var c = text[_at];
                if (c == '#')
                {
                    while (_at < text.Length && text[_at] != '\n')
                    {
                        _at++;
                    }
                }
                else if (c is ' ' or '\t' or '\r' || (newlines && c == '\n'))
                {
                    _at++;
                }
                else
                {
                    break;
                }
            }
        }
    }
}
