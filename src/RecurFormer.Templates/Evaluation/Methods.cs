using System.Globalization;
using System.Text;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// The Python methods templates call on strings, dicts and lists (<c>content.strip()</c>, <c>tool.items()</c>,
/// <c>message.get('x')</c>). Mutating methods (<c>append</c>, <c>update</c>, …) are refused as transformers' immutable
/// sandbox refuses them, unless <see cref="TemplateOptions.AllowMutatingMethods"/> is set.
/// </summary>
public static class Methods
{
    private delegate object? Method(object owner, CallArguments arguments);

    private static readonly Dictionary<string, Method> StringMethods = new()
    {
        ["strip"] = (o, a) => Strip((string)o, a, "strip", true, true),
        ["lstrip"] = (o, a) => Strip((string)o, a, "lstrip", true, false),
        ["rstrip"] = (o, a) => Strip((string)o, a, "rstrip", false, true),
        ["split"] = (o, a) => Split((string)o, a, fromRight: false),
        ["rsplit"] = (o, a) => Split((string)o, a, fromRight: true),
        ["splitlines"] = (o, a) => TextUtil.SplitLines((string)o, PyOps.IsTrue(Arg(a, 0, "keepends", false))).Cast<object?>().ToList(),
        ["startswith"] = (o, a) => Affix((string)o, a, "startswith", (s, p) => s.StartsWith(p, StringComparison.Ordinal)),
        ["endswith"] = (o, a) => Affix((string)o, a, "endswith", (s, p) => s.EndsWith(p, StringComparison.Ordinal)),
        ["replace"] = (o, a) => TextUtil.Replace((string)o, ArgString(a, 0, "old"), ArgString(a, 1, "new"), Arg(a, 2, "count", -1L)),
        ["upper"] = (o, a) => ((string)o).ToUpperInvariant(),
        ["lower"] = (o, a) => ((string)o).ToLowerInvariant(),
        ["title"] = (o, a) => TextUtil.PythonTitle((string)o),
        ["capitalize"] = (o, a) => TextUtil.Capitalize((string)o),
        ["swapcase"] = (o, a) => string.Concat(((string)o).Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c))),
        ["format"] = (o, a) => TextUtil.PythonFormat((string)o, a),
        ["join"] = (o, a) => string.Join((string)o, PyOps.Iterate(a.Positional.ElementAtOrDefault(0)).Select(x =>
            x as string ?? throw new PyError($"sequence item: expected str instance, {PyOps.TypeName(x)} found"))),
        ["find"] = (o, a) => (long)((string)o).IndexOf(ArgString(a, 0, "sub"), StringComparison.Ordinal),
        ["rfind"] = (o, a) => (long)((string)o).LastIndexOf(ArgString(a, 0, "sub"), StringComparison.Ordinal),
        ["index"] = (o, a) => ((string)o).IndexOf(ArgString(a, 0, "sub"), StringComparison.Ordinal) is var i and >= 0 ? (long)i : throw new PyError("substring not found"),
        ["count"] = (o, a) => (long)TextUtil.CountOccurrences((string)o, ArgString(a, 0, "sub")),
        ["isdigit"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(char.IsDigit),
        ["isnumeric"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(char.IsDigit),
        ["isdecimal"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(char.IsDigit),
        ["isalpha"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(char.IsLetter),
        ["isalnum"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(char.IsLetterOrDigit),
        ["isspace"] = (o, a) => ((string)o).Length > 0 && ((string)o).All(TextUtil.IsPythonSpace),
        ["islower"] = (o, a) => ((string)o).Any(char.IsLetter) && !((string)o).Any(char.IsUpper),
        ["isupper"] = (o, a) => ((string)o).Any(char.IsLetter) && !((string)o).Any(char.IsLower),
        ["removeprefix"] = (o, a) => ((string)o).StartsWith(ArgString(a, 0, "prefix"), StringComparison.Ordinal) ? ((string)o)[ArgString(a, 0, "prefix").Length..] : o,
        ["removesuffix"] = (o, a) => ArgString(a, 0, "suffix") is var suffix && suffix.Length > 0 && ((string)o).EndsWith(suffix, StringComparison.Ordinal) ? ((string)o)[..^suffix.Length] : o,
        ["zfill"] = (o, a) => ((string)o).PadLeft((int)(long)Arg(a, 0, "width", 0L)!, '0'),
        ["center"] = (o, a) => TextUtil.Center((string)o, (int)(long)Arg(a, 0, "width", 0L)!),
        ["ljust"] = (o, a) => ((string)o).PadRight((int)(long)Arg(a, 0, "width", 0L)!),
        ["rjust"] = (o, a) => ((string)o).PadLeft((int)(long)Arg(a, 0, "width", 0L)!),
        ["partition"] = (o, a) => Partition((string)o, ArgString(a, 0, "sep"), fromRight: false),
        ["rpartition"] = (o, a) => Partition((string)o, ArgString(a, 0, "sep"), fromRight: true),
    };

    private static readonly Dictionary<string, Method> DictMethods = new()
    {
        ["items"] = (o, a) => ((PyDict)o).Entries.Select(e => (object?)new PyTuple([Key(e.Key), e.Value])).ToList(),
        ["keys"] = (o, a) => ((PyDict)o).Keys.Select(Key).ToList(),
        ["values"] = (o, a) => ((PyDict)o).Values.ToList(),
        ["get"] = (o, a) => ((PyDict)o).TryGet(a.Positional.ElementAtOrDefault(0), out var value) ? value : a.Positional.ElementAtOrDefault(1),
        ["copy"] = (o, a) => CopyDict((PyDict)o),
    };

    private static readonly Dictionary<string, Method> ListMethods = new()
    {
        ["index"] = (o, a) =>
        {
            var list = (List<object?>)o;
            for (var i = 0; i < list.Count; i++)
            {
                if (PyOps.PyEquals(list[i], a.Positional.ElementAtOrDefault(0)))
                {
                    return (long)i;
                }
            }
            throw new PyError($"{PyOps.Repr(a.Positional.ElementAtOrDefault(0))} is not in list");
        },
        ["count"] = (o, a) => (long)((List<object?>)o).Count(x => PyOps.PyEquals(x, a.Positional.ElementAtOrDefault(0))),
        ["copy"] = (o, a) => new List<object?>((List<object?>)o),
        // Jinja2's sandbox lets pop and clear through on lists (they are not in its list of mutating methods).
        ["pop"] = (o, a) =>
        {
            var list = (List<object?>)o;
            if (list.Count == 0)
            {
                throw new PyError("pop from empty list");
            }
            var at = a.Positional.Count > 0 ? (long)a.Positional[0]! : list.Count - 1;
            at = at < 0 ? at + list.Count : at;
            if (at < 0 || at >= list.Count)
            {
                throw new PyError("pop index out of range");
            }
            var item = list[(int)at];
            list.RemoveAt((int)at);
            return item;
        },
        ["clear"] = (o, a) => { ((List<object?>)o).Clear(); return null; },
    };

    // Refused by the immutable sandbox; available only with AllowMutatingMethods.
    private static readonly Dictionary<string, Method> MutatingListMethods = new()
    {
        ["append"] = (o, a) => { ((List<object?>)o).Add(a.Positional.ElementAtOrDefault(0)); return null; },
        ["extend"] = (o, a) => { ((List<object?>)o).AddRange(PyOps.Iterate(a.Positional.ElementAtOrDefault(0))); return null; },
        ["insert"] = (o, a) =>
        {
            var list = (List<object?>)o;
            var at = (int)Math.Clamp((long)a.Positional[0]!, 0, list.Count);
            list.Insert(at, a.Positional[1]);
            return null;
        },
        ["remove"] = (o, a) =>
        {
            var list = (List<object?>)o;
            var index = list.FindIndex(x => PyOps.PyEquals(x, a.Positional.ElementAtOrDefault(0)));
            if (index < 0)
            {
                throw new PyError("list.remove(x): x not in list");
            }
            list.RemoveAt(index);
            return null;
        },
        ["reverse"] = (o, a) => { ((List<object?>)o).Reverse(); return null; },
        ["sort"] = (o, a) => throw new PyError("list.sort is not supported; use the sort filter"),
    };

    private static readonly Dictionary<string, Method> MutatingDictMethods = new()
    {
        ["update"] = (o, a) =>
        {
            var dict = (PyDict)o;
            if (a.Positional.ElementAtOrDefault(0) is PyDict other)
            {
                foreach (var (key, value) in other.Entries)
                {
                    dict.Set(Key(key), value);
                }
            }
            foreach (var (key, value) in a.Named)
            {
                dict.Set(key, value);
            }
            return null;
        },
        ["pop"] = (o, a) =>
        {
            var dict = (PyDict)o;
            var key = a.Positional.ElementAtOrDefault(0);
            if (dict.TryGet(key, out var value))
            {
                dict.Remove(key);
                return value;
            }
            return a.Positional.Count > 1 ? a.Positional[1] : throw new PyError($"KeyError: {PyOps.Repr(key)}");
        },
        ["setdefault"] = (o, a) =>
        {
            var dict = (PyDict)o;
            var key = a.Positional.ElementAtOrDefault(0);
            if (!dict.TryGet(key, out var value))
            {
                value = a.Positional.ElementAtOrDefault(1);
                dict.Set(key, value);
            }
            return value;
        },
        ["clear"] = (o, a) => { ((PyDict)o).Clear(); return null; },
        ["popitem"] = (o, a) => throw new PyError("dict.popitem is not supported"),
    };

    private static object? Key(object key) => key is PyDict.NoneKey ? null : key;

    private static PyDict CopyDict(PyDict source)
    {
        var copy = new PyDict();
        foreach (var (key, value) in source.Entries)
        {
            copy.Set(Key(key), value);
        }
        return copy;
    }

    public static bool TryBind(object? owner, string name, TemplateOptions options, out PyCallable? method)
    {
        method = null;
        if (owner is Markup markup)
        {
            owner = markup.Text;
        }
        var (table, mutating) = owner switch
        {
            string => (StringMethods, null),
            PyDict => (DictMethods, MutatingDictMethods),
            List<object?> => (ListMethods, MutatingListMethods),
            _ => ((Dictionary<string, Method>?)null, (Dictionary<string, Method>?)null),
        };
        if (table is null)
        {
            return false;
        }
        if (table.TryGetValue(name, out var body))
        {
            var typeName = PyOps.TypeName(owner);
            method = new BuiltinFunction(name, (site, arguments) =>
            {
                CheckArity(typeName, name, arguments);
                return body(owner!, arguments);
            });
            return true;
        }
        if (mutating is not null && mutating.TryGetValue(name, out var mutator))
        {
            method = options.AllowMutatingMethods
                ? new BuiltinFunction(name, (site, arguments) => mutator(owner!, arguments))
                : new BuiltinFunction(name, (site, arguments) =>
                    throw new PyError($"access to attribute '{name}' of '{PyOps.TypeName(owner)}' object is unsafe."));
            return true;
        }
        return false;
    }

    // Most positional arguments each method accepts (Python raises TypeError beyond them); absent means no limit here.
    private static readonly Dictionary<string, int> MaxArguments = new()
    {
        ["upper"] = 0, ["lower"] = 0, ["title"] = 0, ["capitalize"] = 0, ["swapcase"] = 0, ["isdigit"] = 0, ["isnumeric"] = 0,
        ["isdecimal"] = 0, ["isalpha"] = 0, ["isalnum"] = 0, ["isspace"] = 0, ["islower"] = 0, ["isupper"] = 0,
        ["items"] = 0, ["keys"] = 0, ["values"] = 0, ["copy"] = 0, ["clear"] = 0,
        ["strip"] = 1, ["lstrip"] = 1, ["rstrip"] = 1, ["splitlines"] = 1, ["join"] = 1, ["removeprefix"] = 1, ["removesuffix"] = 1,
        ["zfill"] = 1, ["partition"] = 1, ["rpartition"] = 1, ["pop"] = 1,
        ["split"] = 2, ["rsplit"] = 2, ["get"] = 2, ["center"] = 2, ["ljust"] = 2, ["rjust"] = 2,
        ["startswith"] = 3, ["endswith"] = 3, ["replace"] = 3, ["find"] = 3, ["rfind"] = 3, ["index"] = 3, ["count"] = 3,
    };

    private static readonly HashSet<string> MinimumOneArgument =
        ["join", "removeprefix", "removesuffix", "zfill", "partition", "rpartition", "get", "center", "ljust", "rjust",
         "startswith", "endswith", "find", "rfind", "index", "count"];

    private static void CheckArity(string typeName, string name, CallArguments arguments)
    {
        if (MaxArguments.TryGetValue(name, out var most) && arguments.Count > most)
        {
            throw new PyError(most == 0
                ? $"{typeName}.{name}() takes no arguments ({arguments.Count} given)"
                : $"{name}() takes at most {most} arguments ({arguments.Count} given)");
        }
        if (MinimumOneArgument.Contains(name) && arguments.Count == 0)
        {
            throw new PyError($"{name}() takes at least 1 argument (0 given)");
        }
        if (name == "replace" && arguments.Count < 2)
        {
            throw new PyError($"replace() takes at least 2 arguments ({arguments.Count} given)");
        }
    }

    private static object? Arg(CallArguments arguments, int index, string name, object? fallback)
    {
        if (index < arguments.Positional.Count)
        {
            return arguments.Positional[index];
        }
        foreach (var (key, value) in arguments.Named)
        {
            if (key == name)
            {
                return value;
            }
        }
        return fallback;
    }

    private static string ArgString(CallArguments arguments, int index, string name) =>
        Arg(arguments, index, name, null) as string
        ?? throw new PyError($"argument '{name}' must be str, not {PyOps.TypeName(Arg(arguments, index, name, null))}");

    private static string Strip(string text, CallArguments arguments, string function, bool left, bool right)
    {
        var chars = Arg(arguments, 0, "chars", null);
        if (chars is not null and not string)
        {
            throw new PyError($"{function} arg must be None or str");
        }
        return TextUtil.Strip(text, chars as string, left, right);
    }

    private static object Split(string text, CallArguments arguments, bool fromRight)
    {
        var separator = Arg(arguments, 0, "sep", null);
        var maxSplit = Arg(arguments, 1, "maxsplit", -1L) is long m ? m : -1;
        if (separator is not null and not string)
        {
            throw new PyError($"must be str or None, not {PyOps.TypeName(separator)}");
        }
        return TextUtil.Split(text, separator as string, maxSplit, fromRight).Cast<object?>().ToList();
    }

    private static object Affix(string text, CallArguments arguments, string function, Func<string, string, bool> test)
    {
        var affix = Arg(arguments, 0, "prefix", null);
        if (arguments.Positional.Count > 1)
        {
            var start = (int)Math.Clamp((long)arguments.Positional[1]!, 0, text.Length);
            text = text[start..];
        }
        return affix switch
        {
            string s => test(text, s),
            PyTuple tuple => tuple.Items.Any(item => item is string s && test(text, s)),
            _ => throw new PyError($"{function} first arg must be str or a tuple of str, not {PyOps.TypeName(affix)}"),
        };
    }

    private static PyTuple Partition(string text, string separator, bool fromRight)
    {
        var at = fromRight ? text.LastIndexOf(separator, StringComparison.Ordinal) : text.IndexOf(separator, StringComparison.Ordinal);
        if (at < 0)
        {
            return fromRight ? new PyTuple(["", "", text]) : new PyTuple([text, "", ""]);
        }
        return new PyTuple([text[..at], separator, text[(at + separator.Length)..]]);
    }
}

/// <summary>String helpers with Python's exact rules (whitespace set, split, splitlines, title, format).</summary>
public static class TextUtil
{
    /// <summary>Python's str.isspace: .NET's whitespace plus the four ASCII separators U+001C..U+001F.</summary>
    public static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001c' and <= '\u001f';

    public static string Strip(string text, string? chars, bool left, bool right)
    {
        var start = 0;
        var end = text.Length;
        bool Strippable(char c) => chars is null ? IsPythonSpace(c) : chars.Contains(c);
        if (left)
        {
            while (start < end && Strippable(text[start]))
            {
                start++;
            }
        }
        if (right)
        {
            while (end > start && Strippable(text[end - 1]))
            {
                end--;
            }
        }
        return text[start..end];
    }

    public static List<string> Split(string text, string? separator, long maxSplit, bool fromRight)
    {
        var parts = new List<string>();
        if (separator is null)
        {
            // Runs of whitespace separate; leading and trailing whitespace yields no empty parts.
            var words = new List<(int Start, int End)>();
            var i = 0;
            while (i < text.Length)
            {
                while (i < text.Length && IsPythonSpace(text[i]))
                {
                    i++;
                }
                if (i >= text.Length)
                {
                    break;
                }
                var start = i;
                while (i < text.Length && !IsPythonSpace(text[i]))
                {
                    i++;
                }
                words.Add((start, i));
            }
            if (maxSplit < 0 || words.Count <= maxSplit + 1)
            {
                return words.Select(w => text[w.Start..w.End]).ToList();
            }
            if (!fromRight)
            {
                var kept = words.Take((int)maxSplit).Select(w => text[w.Start..w.End]).ToList();
                kept.Add(text[words[(int)maxSplit].Start..].TrimEnd().TrimEnd(IsPythonSpaceChars));
                return kept;
            }
            var tail = words.Skip(words.Count - (int)maxSplit).Select(w => text[w.Start..w.End]).ToList();
            tail.Insert(0, text[..words[words.Count - (int)maxSplit - 1].End].TrimStart(IsPythonSpaceChars));
            return tail;
        }
        if (separator.Length == 0)
        {
            throw new PyError("empty separator");
        }
        if (!fromRight)
        {
            var position = 0;
            while (maxSplit < 0 || parts.Count < maxSplit)
            {
                var at = text.IndexOf(separator, position, StringComparison.Ordinal);
                if (at < 0)
                {
                    break;
                }
                parts.Add(text[position..at]);
                position = at + separator.Length;
            }
            parts.Add(text[position..]);
            return parts;
        }
        var end = text.Length;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            var at = end - separator.Length < 0 ? -1 : text.LastIndexOf(separator, end - 1, end, StringComparison.Ordinal);
            if (at < 0 || at + separator.Length > end)
            {
                break;
            }
            parts.Insert(0, text[(at + separator.Length)..end]);
            end = at;
        }
        parts.Insert(0, text[..end]);
        return parts;
    }

    private static readonly char[] IsPythonSpaceChars = [' ', '\t', '\n', '\r', '\v', '\f', '\u001c', '\u001d', '\u001e', '\u001f', '\u0085', '\u00a0'];

    /// <summary>Python's str.splitlines: \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029 end lines.</summary>
    public static List<string> SplitLines(string text, bool keepEnds)
    {
        var lines = new List<string>();
        var start = 0;
        var i = 0;
        while (i < text.Length)
        {
            var c = text[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\u001c' or '\u001d' or '\u001e' or '\u0085' or '\u2028' or '\u2029')
            {
                var end = i;
                i += c == '\r' && i + 1 < text.Length && text[i + 1] == '\n' ? 2 : 1;
                lines.Add(keepEnds ? text[start..i] : text[start..end]);
                start = i;
            }
            else
            {
                i++;
            }
        }
        if (start < text.Length)
        {
            lines.Add(text[start..]);
        }
        return lines;
    }

    public static string Replace(string text, string old, string replacement, object? count)
    {
        var limit = count is long l ? l : -1;
        if (limit < 0)
        {
            return old.Length == 0 ? InsertBetweenAll(text, replacement) : text.Replace(old, replacement, StringComparison.Ordinal);
        }
        var builder = new StringBuilder();
        var position = 0;
        for (var n = 0; n < limit; n++)
        {
            var at = text.IndexOf(old, position, StringComparison.Ordinal);
            if (at < 0 || old.Length == 0)
            {
                break;
            }
            builder.Append(text, position, at - position).Append(replacement);
            position = at + old.Length;
        }
        return builder.Append(text, position, text.Length - position).ToString();
    }

    private static string InsertBetweenAll(string text, string insert)
    {
        var builder = new StringBuilder(insert);
        foreach (var c in text)
        {
            builder.Append(c).Append(insert);
        }
        return builder.ToString();
    }

    public static int CountOccurrences(string text, string needle)
    {
        if (needle.Length == 0)
        {
            return text.Length + 1;
        }
        var count = 0;
        for (var at = text.IndexOf(needle, StringComparison.Ordinal); at >= 0; at = text.IndexOf(needle, at + needle.Length, StringComparison.Ordinal))
        {
            count++;
        }
        return count;
    }

    /// <summary>Python's str.title(): a letter after a non-letter is upper-cased, every other letter lower-cased.</summary>
    public static string PythonTitle(string text)
    {
        var builder = new StringBuilder(text.Length);
        var previousCased = false;
        foreach (var c in text)
        {
            builder.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return builder.ToString();
    }

    public static string Capitalize(string text) =>
        text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..].ToLowerInvariant();

    public static string Center(string text, int width)
    {
        if (width <= text.Length)
        {
            return text;
        }
        var total = width - text.Length;
        // CPython puts the extra space on the right when the text length is even... and on the left when odd.
        var left = total / 2 + (total & width & 1);
        return new string(' ', left) + text + new string(' ', total - left);
    }

    /// <summary>Python's str.format for {} / {0} / {name} fields with optional attribute and index access and !s/!r.</summary>
    public static string PythonFormat(string format, CallArguments arguments)
    {
        var builder = new StringBuilder();
        var automatic = 0;
        for (var i = 0; i < format.Length; i++)
        {
            var c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{')
            {
                builder.Append('{');
                i++;
                continue;
            }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}')
            {
                builder.Append('}');
                i++;
                continue;
            }
            if (c != '{')
            {
                builder.Append(c);
                continue;
            }
            var close = format.IndexOf('}', i);
            if (close < 0)
            {
                throw new PyError("Single '{' encountered in format string");
            }
            var field = format[(i + 1)..close];
            i = close;
            var conversion = "";
            var bang = field.IndexOf('!');
            if (bang >= 0)
            {
                conversion = field[(bang + 1)..];
                field = field[..bang];
            }
            var colon = field.IndexOf(':');
            if (colon >= 0)
            {
                field = field[..colon];
            }
            object? value;
            if (field.Length == 0)
            {
                value = arguments.Positional.ElementAtOrDefault(automatic++);
            }
            else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out var position))
            {
                value = arguments.Positional.ElementAtOrDefault(position);
            }
            else
            {
                value = arguments.Named.FirstOrDefault(p => p.Key == field).Value;
            }
            builder.Append(conversion.StartsWith('r') ? PyOps.Repr(value) : PyOps.Str(value));
        }
        return builder.ToString();
    }
}
