using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RecurFormer.Templates.Values;

/// <summary>
/// JSON in and out. Out: Python's <c>json.dumps</c> byte for byte, which is what transformers' <c>tojson</c> filter
/// calls (<c>", "</c> and <c>": "</c> separators without indent, <c>","</c> with it, non-ASCII kept unless
/// ensure_ascii, floats as Python prints them). In: System.Text.Json values to template values, keeping member order
/// and telling integers (<c>3</c>) from floats (<c>3.0</c>) as Python's json.loads does.
/// </summary>
public static class PyJson
{
    public static string Dumps(object? value, bool ensureAscii = false, object? indent = null, string? itemSeparator = null,
        string? keySeparator = null, bool sortKeys = false)
    {
        var indentText = indent switch
        {
            null => null,
            long n => new string(' ', (int)Math.Max(0, n)),
            bool b => b ? " " : "",
            string s => s,
            _ => throw new PyError($"indent must be an int or a string, not {PyOps.TypeName(indent)}"),
        };
        var writer = new Writer(ensureAscii, indentText, itemSeparator ?? (indentText is null ? ", " : ","), keySeparator ?? ": ", sortKeys);
        writer.Write(value, 0);
        return writer.ToString();
    }

    private sealed class Writer(bool ensureAscii, string? indent, string itemSeparator, string keySeparator, bool sortKeys)
    {
        private readonly StringBuilder builder = new();

        public override string ToString() => builder.ToString();

        private void NewLine(int level)
        {
            if (indent is null)
            {
                return;
            }
            builder.Append('\n');
            for (var i = 0; i < level; i++)
            {
                builder.Append(indent);
            }
        }

        public void Write(object? value, int level)
        {
            if (level > 500)
            {
                throw new PyError("value nested too deeply to serialise as JSON");
            }
            switch (value)
            {
                case null:
                    builder.Append("null");
                    break;
                case bool b:
                    builder.Append(b ? "true" : "false");
                    break;
                case long l:
                    builder.Append(l.ToString(CultureInfo.InvariantCulture));
                    break;
                case double d:
                    builder.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PyOps.FloatRepr(d));
                    break;
                case string s:
                    WriteString(s);
                    break;
                case Markup m:
                    WriteString(m.Text);
                    break;
                case List<object?> or PyTuple:
                    var items = PyOps.AsSequence(value)!;
                    if (items.Count == 0)
                    {
                        builder.Append("[]");
                        break;
                    }
                    builder.Append('[');
                    for (var i = 0; i < items.Count; i++)
                    {
                        if (i > 0)
                        {
                            builder.Append(itemSeparator);
                        }
                        NewLine(level + 1);
                        Write(items[i], level + 1);
                    }
                    NewLine(level);
                    builder.Append(']');
                    break;
                case PyDict dict:
                    WriteDict(dict.Entries.Select(e => (e.Key is PyDict.NoneKey ? null : e.Key, e.Value)), level);
                    break;
                case Namespace ns:
                    throw new PyError("Object of type Namespace is not JSON serializable");
                default:
                    throw new PyError($"Object of type {PyOps.TypeName(value)} is not JSON serializable");
            }
        }

        private void WriteDict(IEnumerable<(object? Key, object? Value)> entries, int level)
        {
            var list = entries.Select(e => (Key: KeyText(e.Key), e.Value)).ToList();
            if (list.Count == 0)
            {
                builder.Append("{}");
                return;
            }
            if (sortKeys)
            {
                list = [.. list.OrderBy(e => e.Key, StringComparer.Ordinal)];
            }
            builder.Append('{');
            for (var i = 0; i < list.Count; i++)
            {
                if (i > 0)
                {
                    builder.Append(itemSeparator);
                }
                NewLine(level + 1);
                WriteString(list[i].Key);
                builder.Append(keySeparator);
                Write(list[i].Value, level + 1);
            }
            NewLine(level);
            builder.Append('}');
        }

        private static string KeyText(object? key) => key switch
        {
            string s => s,
            null => "null",
            bool b => b ? "true" : "false",
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => PyOps.FloatRepr(d),
            _ => throw new PyError($"keys must be str, int, float, bool or None, not {PyOps.TypeName(key)}"),
        };

        private void WriteString(string s)
        {
            builder.Append('"');
            foreach (var c in s)
            {
                switch (c)
                {
                    case '"': builder.Append("\\\""); break;
                    case '\\': builder.Append("\\\\"); break;
                    case '\n': builder.Append("\\n"); break;
                    case '\r': builder.Append("\\r"); break;
                    case '\t': builder.Append("\\t"); break;
                    case '\b': builder.Append("\\b"); break;
                    case '\f': builder.Append("\\f"); break;
                    default:
                        if (c < 0x20 || (ensureAscii && c > 0x7f))
                        {
                            builder.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        }
                        else
                        {
                            builder.Append(c);
                        }
                        break;
                }
            }
            builder.Append('"');
        }
    }

    /// <summary>A System.Text.Json element as a template value (object → dict in member order, array → list).</summary>
    public static object? FromJson(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var dict = new PyDict();
                foreach (var property in element.EnumerateObject())
                {
                    dict.Set(property.Name, FromJson(property.Value));
                }
                return dict;
            case JsonValueKind.Array:
                var list = new List<object?>(element.GetArrayLength());
                foreach (var item in element.EnumerateArray())
                {
                    list.Add(FromJson(item));
                }
                return list;
            case JsonValueKind.String:
                return element.GetString();
            case JsonValueKind.Number:
                return Number(element.GetRawText());
            case JsonValueKind.True:
                return true;
            case JsonValueKind.False:
                return false;
            default:
                return null;
        }
    }

    /// <summary>A JsonNode as a template value; null stays None.</summary>
    public static object? FromJson(JsonNode? node)
    {
        if (node is null)
        {
            return null;
        }
        using var document = JsonDocument.Parse(node.ToJsonString());
        return FromJson(document.RootElement);
    }

    /// <summary>Python's json.loads: a number without fraction or exponent is an int, anything else a float.</summary>
    private static object Number(string raw)
    {
        if (raw.IndexOfAny(['.', 'e', 'E']) < 0 && long.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            return integer;
        }
        return double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture);
    }
}
