using System.Globalization;
using System.Text;

namespace RecurFormer.Templates.Lexing;

/// <summary>
/// Splits a template into text and tag tokens, applying Jinja2's whitespace control as transformers configures it:
/// <c>trim_blocks</c> (drop the newline right after a block or comment tag), <c>lstrip_blocks</c> (drop spaces and tabs
/// between the start of a line and a block or comment tag), and the explicit <c>-</c>/<c>+</c> markers. Also applies
/// <c>keep_trailing_newline=False</c> (one final newline of the source is dropped) and turns every line ending into
/// "\n", as Jinja2 does before lexing. Raw blocks become plain text here.
/// </summary>
public sealed class Lexer
{
    private readonly string source;
    private readonly List<Token> tokens = [];
    private readonly int[] lineStarts;
    private int position;
    // Jinja2's "line_starting": the text about to be lexed begins a line (start of source, or the previous tag's match
    // ended with a newline). lstrip_blocks only strips the indentation of a tag that begins its own line.
    private bool lineStarting = true;

    private Lexer(string source)
    {
        this.source = source;
        var starts = new List<int> { 0 };
        for (var i = 0; i < source.Length; i++)
        {
            if (source[i] == '\n')
            {
                starts.Add(i + 1);
            }
        }
        lineStarts = [.. starts];
    }

    public static List<Token> Tokenize(string templateSource)
    {
        var lexer = new Lexer(Normalize(templateSource));
        lexer.Run();
        return lexer.tokens;
    }

    /// <summary>Jinja2 turns \r\n and \r into \n and, without keep_trailing_newline, drops one trailing newline.</summary>
    private static string Normalize(string text)
    {
        if (text.Contains('\r'))
        {
            text = text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');
        }
        return text.EndsWith('\n') ? text[..^1] : text;
    }

    private (int Line, int Column) Locate(int offset)
    {
        var index = Array.BinarySearch(lineStarts, offset);
        if (index < 0)
        {
            index = ~index - 1;
        }
        return (index + 1, offset - lineStarts[index] + 1);
    }

    private TemplateException Error(string message, int offset)
    {
        var (line, column) = Locate(offset);
        return new TemplateException(message, line, column);
    }

    private void Run()
    {
        while (position < source.Length)
        {
            var tagStart = FindTagStart(position);
            var textEnd = tagStart < 0 ? source.Length : tagStart;
            var text = source[position..textEnd];
            var textOffset = position;
            if (tagStart < 0)
            {
                AddText(text, textOffset);
                break;
            }
            var kind = source[tagStart + 1];
            var sign = tagStart + 2 < source.Length ? source[tagStart + 2] : '\0';
            text = ApplyLeftControl(text, sign, isVariable: kind == '{');
            AddText(text, textOffset);
            position = tagStart + 2 + (sign is '-' or '+' ? 1 : 0);
            switch (kind)
            {
                case '#':
                    LexComment(tagStart);
                    break;
                case '%' when TryLexRaw(tagStart):
                    break;
                case '%':
                    Emit(TokenKind.BlockBegin, "{%", tagStart);
                    LexInsideTag(tagStart, isBlock: true);
                    break;
                default:
                    Emit(TokenKind.VariableBegin, "{{", tagStart);
                    LexInsideTag(tagStart, isBlock: false);
                    break;
            }
        }
        Emit(TokenKind.End, "", source.Length);
    }

    private int FindTagStart(int from)
    {
        var index = from;
        while (true)
        {
            index = source.IndexOf('{', index);
            if (index < 0 || index + 1 >= source.Length)
            {
                return -1;
            }
            var next = source[index + 1];
            if (next is '{' or '%' or '#')
            {
                return index;
            }
            index++;
        }
    }

    /// <summary>The whitespace rules that act on the text before a tag: "-" strips all, lstrip_blocks the indentation.</summary>
    private string ApplyLeftControl(string text, char sign, bool isVariable)
    {
        if (sign == '-')
        {
            return text.TrimEnd(PythonWhitespace);
        }
        if (sign == '+' || isVariable)
        {
            return text;
        }
        var lineStart = text.LastIndexOf('\n') + 1;
        if ((lineStart > 0 || lineStarting) && lineStart < text.Length && IsBlank(text, lineStart))
        {
            return text[..lineStart];
        }
        return text;
    }

    private static bool IsBlank(string text, int from)
    {
        for (var i = from; i < text.Length; i++)
        {
            if (!char.IsWhiteSpace(text[i]))
            {
                return false;
            }
        }
        return true;
    }

    private static readonly char[] PythonWhitespace = [' ', '\t', '\n', '\r', '\v', '\f', '\u001c', '\u001d', '\u001e', '\u001f', '\u0085', '\u00a0', '\u1680', '\u2000', '\u2001', '\u2002', '\u2003', '\u2004', '\u2005', '\u2006', '\u2007', '\u2008', '\u2009', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000'];

    private void AddText(string text, int offset)
    {
        if (text.Length > 0)
        {
            var (line, column) = Locate(offset);
            tokens.Add(new Token(TokenKind.Text, text, text, line, column));
        }
    }

    private void Emit(TokenKind kind, string text, int offset, object? value = null)
    {
        var (line, column) = Locate(offset);
        tokens.Add(new Token(kind, text, value ?? text, line, column));
    }

    /// <summary>Consumes a tag's closing delimiter and the whitespace after it that "-" or trim_blocks removes.</summary>
    private void ConsumeTagEnd(int closeStart, int closeLength, bool minus, bool plus, bool trimNewline)
    {
        position = closeStart + closeLength;
        var consumedNewline = false;
        if (minus)
        {
            while (position < source.Length && Array.IndexOf(PythonWhitespace, source[position]) >= 0)
            {
                consumedNewline = source[position] == '\n';
                position++;
            }
        }
        else if (!plus && trimNewline && position < source.Length && source[position] == '\n')
        {
            position++;
            consumedNewline = true;
        }
        lineStarting = consumedNewline;
    }

    private void LexComment(int tagStart)
    {
        var close = source.IndexOf("#}", position, StringComparison.Ordinal);
        if (close < 0)
        {
            throw Error("missing end of comment tag", tagStart);
        }
        var minus = close > position && source[close - 1] == '-';
        var plus = close > position && source[close - 1] == '+';
        ConsumeTagEnd(close, 2, minus, plus, trimNewline: true);
    }

    /// <summary>
    /// <c>{% raw %}…{% endraw %}</c>: the content is text, untouched except by the whitespace control of the two tags
    /// (no trim_blocks after the opening tag, as in Jinja2).
    /// </summary>
    private bool TryLexRaw(int tagStart)
    {
        var i = SkipSpaces(position);
        if (string.CompareOrdinal(source, i, "raw", 0, 3) != 0)
        {
            return false;
        }
        i = SkipSpaces(i + 3);
        var openMinus = i < source.Length && source[i] == '-';
        if (openMinus)
        {
            i++;
        }
        if (string.CompareOrdinal(source, i, "%}", 0, 2) != 0)
        {
            return false;
        }
        ConsumeTagEnd(i, 2, openMinus, plus: false, trimNewline: false);
        var contentStart = position;
        var search = position;
        while (true)
        {
            var end = source.IndexOf("{%", search, StringComparison.Ordinal);
            if (end < 0)
            {
                throw Error("unexpected end of template: the raw block is never closed with {% endraw %}", tagStart);
            }
            var j = end + 2;
            var sign = j < source.Length ? source[j] : '\0';
            if (sign is '-' or '+')
            {
                j++;
            }
            j = SkipSpaces(j);
            if (string.CompareOrdinal(source, j, "endraw", 0, 6) != 0)
            {
                search = end + 2;
                continue;
            }
            j = SkipSpaces(j + 6);
            var closeMinus = j < source.Length && source[j] == '-';
            var closePlus = j < source.Length && source[j] == '+';
            if (closeMinus || closePlus)
            {
                j++;
            }
            if (string.CompareOrdinal(source, j, "%}", 0, 2) != 0)
            {
                throw Error("expected '%}' after 'endraw'", j);
            }
            var content = ApplyLeftControl(source[contentStart..end], sign, isVariable: false);
            AddText(content, contentStart);
            ConsumeTagEnd(j, 2, closeMinus, closePlus, trimNewline: true);
            return true;
        }
    }

    private int SkipSpaces(int i)
    {
        while (i < source.Length && char.IsWhiteSpace(source[i]))
        {
            i++;
        }
        return i;
    }

    /// <summary>Tokens between <c>{%</c>/<c>{{</c> and the matching close; brackets must balance before the close counts.</summary>
    private void LexInsideTag(int tagStart, bool isBlock)
    {
        var depth = 0;
        var close = isBlock ? "%}" : "}}";
        while (true)
        {
            while (position < source.Length && char.IsWhiteSpace(source[position]))
            {
                position++;
            }
            if (position >= source.Length)
            {
                throw Error(isBlock ? "unexpected end of template: the tag opened here is never closed with %}"
                    : "unexpected end of template: the expression opened here is never closed with }}", tagStart);
            }
            var c = source[position];
            if (depth == 0)
            {
                // "-%}" / "-}}" strip; "+%}" keeps the newline trim_blocks would drop (there is no "+}}").
                var minus = (c == '-' || (c == '+' && isBlock)) && string.CompareOrdinal(source, position + 1, close, 0, 2) == 0;
                if (minus || string.CompareOrdinal(source, position, close, 0, 2) == 0)
                {
                    var sign = minus ? c : '\0';
                    var closeStart = minus ? position + 1 : position;
                    Emit(isBlock ? TokenKind.BlockEnd : TokenKind.VariableEnd, close, position);
                    ConsumeTagEnd(closeStart, 2, sign == '-', sign == '+', trimNewline: isBlock);
                    return;
                }
            }
            if (char.IsAsciiLetter(c) || c == '_')
            {
                var start = position;
                while (position < source.Length && (char.IsAsciiLetterOrDigit(source[position]) || source[position] == '_'))
                {
                    position++;
                }
                Emit(TokenKind.Name, source[start..position], start);
            }
            else if (char.IsAsciiDigit(c))
            {
                LexNumber();
            }
            else if (c is '\'' or '"')
            {
                LexString(c);
            }
            else
            {
                var op = MatchOperator();
                if (op is null)
                {
                    throw Error($"unexpected character '{c}'", position);
                }
                if (op is "(" or "[" or "{")
                {
                    depth++;
                }
                else if (op is ")" or "]" or "}")
                {
                    if (depth == 0)
                    {
                        throw Error($"unexpected '{op}'", position);
                    }
                    depth--;
                }
                Emit(TokenKind.Operator, op, position);
                position += op.Length;
            }
        }
    }

    private static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ".", ":", "|", ",", ";"];

    private string? MatchOperator()
    {
        foreach (var op in Operators)
        {
            if (string.CompareOrdinal(source, position, op, 0, op.Length) == 0)
            {
                return op;
            }
        }
        return null;
    }

    /// <summary>
    /// Numbers as Jinja2 lexes them: a float (digits with a fraction and/or exponent) is tried first; otherwise an
    /// integer, which is 0x/0o/0b-prefixed, starts with 1-9, or is only zeros ("01" is two tokens, 0 and 1).
    /// Underscores may separate digits.
    /// </summary>
    private void LexNumber()
    {
        var start = position;
        ReadDigits();
        var isFloat = false;
        if (position + 1 < source.Length && source[position] == '.' && char.IsAsciiDigit(source[position + 1]))
        {
            isFloat = true;
            position++;
            ReadDigits();
        }
        if (position < source.Length && source[position] is 'e' or 'E')
        {
            var save = position;
            position++;
            if (position < source.Length && source[position] is '+' or '-')
            {
                position++;
            }
            if (position < source.Length && char.IsAsciiDigit(source[position]))
            {
                ReadDigits();
                isFloat = true;
            }
            else
            {
                position = save;
            }
        }
        if (isFloat)
        {
            var text = source[start..position];
            Emit(TokenKind.Float, text, start, double.Parse(text.Replace("_", "", StringComparison.Ordinal), NumberStyles.Float, CultureInfo.InvariantCulture));
            return;
        }
        position = start;
        var radix = 10;
        if (source[start] == '0' && position + 2 < source.Length && char.ToLowerInvariant(source[start + 1]) is 'x' or 'o' or 'b')
        {
            radix = char.ToLowerInvariant(source[start + 1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
            var digitsStart = start + 2;
            var i = digitsStart;
            while (i < source.Length && (IsRadixDigit(source[i], radix) || (source[i] == '_' && i + 1 < source.Length && IsRadixDigit(source[i + 1], radix))))
            {
                i++;
            }
            if (i > digitsStart)
            {
                position = i;
                var digits = source[digitsStart..i].Replace("_", "", StringComparison.Ordinal);
                try
                {
                    Emit(TokenKind.Integer, source[start..i], start, Convert.ToInt64(digits, radix));
                }
                catch (OverflowException)
                {
                    throw Error($"integer literal {source[start..i]} is too large", start);
                }
                return;
            }
        }
        if (source[start] == '0')
        {
            position = start + 1;
            while (position + 1 < source.Length && (source[position] == '0' || (source[position] == '_' && source[position + 1] == '0')))
            {
                position++;
            }
            Emit(TokenKind.Integer, source[start..position], start, 0L);
            return;
        }
        ReadDigits();
        var integerText = source[start..position];
        if (!long.TryParse(integerText.Replace("_", "", StringComparison.Ordinal), NumberStyles.None, CultureInfo.InvariantCulture, out var integer))
        {
            throw Error($"integer literal {integerText} is too large", start);
        }
        Emit(TokenKind.Integer, integerText, start, integer);
    }

    private static bool IsRadixDigit(char c, int radix) => radix switch
    {
        16 => char.IsAsciiHexDigit(c),
        8 => c is >= '0' and <= '7',
        _ => c is '0' or '1',
    };

    private void ReadDigits()
    {
        while (position < source.Length && (char.IsAsciiDigit(source[position])
            || (source[position] == '_' && position + 1 < source.Length && char.IsAsciiDigit(source[position + 1]))))
        {
            position++;
        }
    }

    /// <summary>A quoted literal, unescaped as Python's "unicode-escape" codec does (unknown escapes stay as written).</summary>
    private void LexString(char quote)
    {
        var start = position;
        var builder = new StringBuilder();
        position++;
        while (true)
        {
            if (position >= source.Length)
            {
                throw Error("unterminated string literal", start);
            }
            var c = source[position];
            if (c == quote)
            {
                position++;
                break;
            }
            if (c != '\\')
            {
                builder.Append(c);
                position++;
                continue;
            }
            if (position + 1 >= source.Length)
            {
                throw Error("unterminated string literal", start);
            }
            var e = source[position + 1];
            position += 2;
            switch (e)
            {
                case 'n': builder.Append('\n'); break;
                case 't': builder.Append('\t'); break;
                case 'r': builder.Append('\r'); break;
                case '\\': builder.Append('\\'); break;
                case '\'': builder.Append('\''); break;
                case '"': builder.Append('"'); break;
                case 'a': builder.Append('\a'); break;
                case 'b': builder.Append('\b'); break;
                case 'f': builder.Append('\f'); break;
                case 'v': builder.Append('\v'); break;
                case '\n': break;
                case 'x': builder.Append(ReadHexEscape(2, start)); break;
                case 'u': builder.Append(ReadHexEscape(4, start)); break;
                case 'U': builder.Append(ReadHexEscape(8, start)); break;
                case >= '0' and <= '7':
                    var value = e - '0';
                    for (var k = 0; k < 2 && position < source.Length && source[position] is >= '0' and <= '7'; k++)
                    {
                        value = value * 8 + (source[position++] - '0');
                    }
                    builder.Append((char)value);
                    break;
                default:
                    builder.Append('\\').Append(e);
                    break;
            }
        }
        Emit(TokenKind.String, source[start..position], start, builder.ToString());
    }

    private string ReadHexEscape(int digits, int literalStart)
    {
        if (position + digits > source.Length
            || !int.TryParse(source.AsSpan(position, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var code)
            || code > 0x10FFFF)
        {
            throw Error("invalid escape sequence in string literal", literalStart);
        }
        position += digits;
        return char.ConvertFromUtf32(code is >= 0xD800 and <= 0xDFFF ? 0xFFFD : code);
    }
}
