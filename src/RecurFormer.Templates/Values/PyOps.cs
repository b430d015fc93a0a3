using System.Globalization;
using System.Text;

namespace RecurFormer.Templates.Values;

/// <summary>
/// Python's semantics for the values a template handles (None = null, bool, long, double, string, List, PyDict,
/// PyTuple, Namespace, PyCallable, Undefined): truthiness, str(), repr(), equality and ordering. Chat templates are
/// written against Python, so these decide whether our output matches transformers' byte for byte.
/// Failures throw <see cref="PyError"/>, which the evaluator turns into a positioned <see cref="TemplateException"/>.
/// </summary>
public static class PyOps
{
    public static bool IsTrue(object? value) => value switch
    {
        null => false,
        Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        Markup m => m.Text.Length > 0,
        List<object?> list => list.Count > 0,
        PyDict dict => dict.Count > 0,
        PyTuple tuple => tuple.Items.Count > 0,
        _ => true,
    };

    /// <summary>Python's type name, used in error messages the way Python words them.</summary>
    public static string TypeName(object? value) => value switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        Markup => "Markup",
        List<object?> => "list",
        PyDict => "dict",
        PyTuple => "tuple",
        Namespace => "Namespace",
        PyCallable => "function",
        _ => value.GetType().Name,
    };

    /// <summary>How Jinja2 names the owner in "… has no attribute …": <c>'dict object'</c>, or <c>'None'</c> for None.</summary>
    public static string DescribeForUndefined(object? owner) =>
        owner is null ? "'None'" : $"'{TypeName(owner)} object'";

    /// <summary>Python's str(): what <c>{{ x }}</c>, <c>~</c> and <c>|string</c> produce.</summary>
    public static string Str(object? value) => value switch
    {
        string s => s,
        Markup m => m.Text,
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        _ => Repr(value),
    };

    /// <summary>Python's repr(), used for containers printed as text (a list of parts printed by a template).</summary>
    public static string Repr(object? value)
    {
        var builder = new StringBuilder();
        AppendRepr(builder, value, 0);
        return builder.ToString();
    }

    private static void AppendRepr(StringBuilder builder, object? value, int depth)
    {
        if (depth > 200)
        {
            throw new PyError("value nested too deeply to print");
        }
        switch (value)
        {
            case string s:
                AppendStringRepr(builder, s);
                break;
            case Markup m:
                builder.Append("Markup(");
                AppendStringRepr(builder, m.Text);
                builder.Append(')');
                break;
            case List<object?> list:
                builder.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                    {
                        builder.Append(", ");
                    }
                    AppendRepr(builder, list[i], depth + 1);
                }
                builder.Append(']');
                break;
            case PyTuple tuple:
                builder.Append('(');
                for (var i = 0; i < tuple.Items.Count; i++)
                {
                    if (i > 0)
                    {
                        builder.Append(", ");
                    }
                    AppendRepr(builder, tuple.Items[i], depth + 1);
                }
                builder.Append(tuple.Items.Count == 1 ? ",)" : ")");
                break;
            case PyDict dict:
                builder.Append('{');
                var first = true;
                foreach (var (key, item) in dict.Entries)
                {
                    if (!first)
                    {
                        builder.Append(", ");
                    }
                    first = false;
                    AppendRepr(builder, key is PyDict.NoneKey ? null : key, depth + 1);
                    builder.Append(": ");
                    AppendRepr(builder, item, depth + 1);
                }
                builder.Append('}');
                break;
            case Namespace ns:
                builder.Append("<Namespace ");
                AppendRepr(builder, ns.Attributes, depth + 1);
                builder.Append('>');
                break;
            case Undefined:
                builder.Append("Undefined");
                break;
            case null or bool or long or double:
                builder.Append(Str(value));
                break;
            default:
                // Objects print as Python prints objects without a __str__ of their own.
                builder.Append(value.ToString() ?? $"<{TypeName(value)} object>");
                break;
        }
    }

    /// <summary>Python's string repr: single quotes unless the text has a single quote and no double quote.</summary>
    private static void AppendStringRepr(StringBuilder builder, string s)
    {
        var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        builder.Append(quote);
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            switch (c)
            {
                case '\\': builder.Append("\\\\"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                default:
                    if (c == quote)
                    {
                        builder.Append('\\').Append(c);
                    }
                    else if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                    {
                        builder.Append(c).Append(s[i + 1]);
                        i++;
                    }
                    else if (c < 0x20 || c == 0x7f)
                    {
                        builder.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    }
                    else if (!IsPrintable(c))
                    {
                        builder.Append(c <= 0xff ? "\\x" + ((int)c).ToString("x2", CultureInfo.InvariantCulture)
                            : "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        builder.Append(c);
                    }
                    break;
            }
        }
        builder.Append(quote);
    }

    private static bool IsPrintable(char c)
    {
        var category = char.GetUnicodeCategory(c);
        return category switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
                or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator
                or UnicodeCategory.ParagraphSeparator => false,
            UnicodeCategory.SpaceSeparator => c == ' ',
            _ => true,
        };
    }

    /// <summary>
    /// Python's repr of a float (also what json.dumps writes): the shortest digits that round-trip, in fixed
    /// notation with at least one decimal unless the decimal exponent is below -4 or above 16.
    /// </summary>
    public static string FloatRepr(double value)
    {
        if (double.IsNaN(value))
        {
            return "nan";
        }
        if (double.IsInfinity(value))
        {
            return value > 0 ? "inf" : "-inf";
        }
        if (value == 0)
        {
            return double.IsNegative(value) ? "-0.0" : "0.0";
        }
        var text = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        string digits;
        int pointPosition;
        var e = text.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            var mantissa = text[..e];
            var exponent = int.Parse(text[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            var dot = mantissa.IndexOf('.');
            digits = mantissa.Replace(".", "", StringComparison.Ordinal);
            pointPosition = (dot < 0 ? mantissa.Length : dot) + exponent;
        }
        else
        {
            var dot = text.IndexOf('.');
            digits = text.Replace(".", "", StringComparison.Ordinal);
            pointPosition = dot < 0 ? text.Length : dot;
        }
        var leading = 0;
        while (leading < digits.Length - 1 && digits[leading] == '0')
        {
            leading++;
        }
        digits = digits[leading..].TrimEnd('0');
        pointPosition -= leading;
        if (digits.Length == 0)
        {
            digits = "0";
        }
        var builder = new StringBuilder();
        if (value < 0)
        {
            builder.Append('-');
        }
        if (pointPosition > 16 || pointPosition < -3)
        {
            builder.Append(digits[0]);
            if (digits.Length > 1)
            {
                builder.Append('.').Append(digits, 1, digits.Length - 1);
            }
            var exponent = pointPosition - 1;
            builder.Append('e').Append(exponent < 0 ? '-' : '+')
                .Append(Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPosition <= 0)
        {
            builder.Append("0.").Append('0', -pointPosition).Append(digits);
        }
        else if (pointPosition >= digits.Length)
        {
            builder.Append(digits).Append('0', pointPosition - digits.Length).Append(".0");
        }
        else
        {
            builder.Append(digits, 0, pointPosition).Append('.').Append(digits, pointPosition, digits.Length - pointPosition);
        }
        return builder.ToString();
    }

    public static bool IsNumber(object? value) => value is long or double or bool;

    public static double ToDouble(object? value) => value switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new PyError($"expected a number, got {TypeName(value)}"),
    };

    /// <summary>Python ==, including 1 == 1.0 == True and element-wise container equality.</summary>
    public static bool PyEquals(object? a, object? b)
    {
        if (ReferenceEquals(a, b))
        {
            return true;
        }
        switch (a)
        {
            case null:
                return b is null;
            case Undefined:
                return b is Undefined;
            case string or Markup:
                return Markup.TextOf(b) is { } textB && string.Equals(Markup.TextOf(a), textB, StringComparison.Ordinal);
            case long or double or bool when IsNumber(b):
                if (a is long la && b is long lb)
                {
                    return la == lb;
                }
                return ToDouble(a) == ToDouble(b);
            case List<object?> listA:
                return b is List<object?> listB && SequenceEquals(listA, listB);
            case PyTuple tupleA:
                return b is PyTuple tupleB && SequenceEquals(tupleA.Items, tupleB.Items);
            case PyDict dictA:
                if (b is not PyDict dictB || dictA.Count != dictB.Count)
                {
                    return false;
                }
                foreach (var (key, value) in dictA.Entries)
                {
                    if (!dictB.TryGet(key is PyDict.NoneKey ? null : key, out var other) || !PyEquals(value, other))
                    {
                        return false;
                    }
                }
                return true;
            default:
                return false;
        }
    }

    private static bool SequenceEquals(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Count; i++)
        {
            if (!PyEquals(a[i], b[i]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Python ordering (&lt;, &gt;, sort): numbers, strings by code point, sequences lexicographically.</summary>
    public static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is long la && b is long lb)
            {
                return la.CompareTo(lb);
            }
            return ToDouble(a).CompareTo(ToDouble(b));
        }
        if (Markup.TextOf(a) is { } sa && Markup.TextOf(b) is { } sb)
        {
            return CompareCodePoints(sa, sb);
        }
        if (AsSequence(a) is { } seqA && AsSequence(b) is { } seqB && a!.GetType() == b!.GetType())
        {
            for (var i = 0; i < Math.Min(seqA.Count, seqB.Count); i++)
            {
                if (!PyEquals(seqA[i], seqB[i]))
                {
                    return Compare(seqA[i], seqB[i]);
                }
            }
            return seqA.Count.CompareTo(seqB.Count);
        }
        if (a is Undefined || b is Undefined)
        {
            throw new PyError(((a as Undefined) ?? (Undefined)b!).Hint, isUndefined: true);
        }
        throw new PyError($"'<' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static int CompareCodePoints(string a, string b)
    {
        // Python compares code points; UTF-16 ordinal order differs only for surrogates against U+E000..U+FFFF.
        var length = Math.Min(a.Length, b.Length);
        for (var i = 0; i < length; i++)
        {
            if (a[i] != b[i])
            {
                var ca = char.IsSurrogate(a[i]) ? 0x10000 + a[i] : a[i];
                var cb = char.IsSurrogate(b[i]) ? 0x10000 + b[i] : b[i];
                return ca.CompareTo(cb);
            }
        }
        return a.Length.CompareTo(b.Length);
    }

    public static IReadOnlyList<object?>? AsSequence(object? value) => value switch
    {
        List<object?> list => list,
        PyTuple tuple => tuple.Items,
        _ => null,
    };

    /// <summary>Python iteration: lists and tuples by item, dicts by key, strings by character, Undefined as empty.</summary>
    public static IEnumerable<object?> Iterate(object? value)
    {
        switch (value)
        {
            case List<object?> list:
                return list;
            case PyTuple tuple:
                return tuple.Items;
            case PyDict dict:
                return dict.Keys.Select(k => k is PyDict.NoneKey ? null : k);
            case string s:
                return TextElements(s);
            case Markup m:
                return TextElements(m.Text);
            case Undefined:
                return [];
            default:
                throw new PyError($"'{TypeName(value)}' object is not iterable");
        }
    }

    /// <summary>The characters of a string as Python sees them: code points, a surrogate pair being one.</summary>
    public static IEnumerable<object?> TextElements(string s)
    {
        for (var i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                yield return s.Substring(i, 2);
                i++;
            }
            else
            {
                yield return s[i].ToString();
            }
        }
    }

    /// <summary>Python len().</summary>
    public static long Length(object? value) => value switch
    {
        string s => CodePointCount(s),
        Markup m => CodePointCount(m.Text),
        List<object?> list => list.Count,
        PyDict dict => dict.Count,
        PyTuple tuple => tuple.Items.Count,
        Undefined => 0,
        Namespace ns => ns.Attributes.Count,
        _ => throw new PyError($"object of type '{TypeName(value)}' has no len()"),
    };

    public static int CodePointCount(string s)
    {
        var count = s.Length;
        for (var i = 0; i + 1 < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && char.IsLowSurrogate(s[i + 1]))
            {
                count--;
                i++;
            }
        }
        return count;
    }

    /// <summary>Python's <c>in</c>: substring, list membership, dict key; Undefined contains nothing.</summary>
    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string or Markup:
                var s = Markup.TextOf(container)!;
                if (Markup.TextOf(item) is not { } needle)
                {
                    throw new PyError($"'in <string>' requires string as left operand, not {TypeName(item)}");
                }
                return s.Contains(needle, StringComparison.Ordinal);
            case PyDict dict:
                return dict.ContainsKey(item);
            case Undefined:
                return false;
            case Namespace ns:
                return ns.Attributes.ContainsKey(item);
            default:
                foreach (var element in Iterate(container))
                {
                    if (PyEquals(element, item))
                    {
                        return true;
                    }
                }
                return false;
        }
    }
}

/// <summary>A Python-level failure (TypeError, ValueError, UndefinedError…) before a position is attached.</summary>
public sealed class PyError(string message, bool isUndefined = false) : Exception(message)
{
    public bool IsUndefined { get; } = isUndefined;
}
