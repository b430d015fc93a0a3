using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// The filters of <c>value | name(args)</c>, with Jinja2 3.1's behaviour (and transformers' <c>tojson</c>). Each
/// filter binds its arguments to Jinja2's signature, so wrong counts and unknown keywords fail as in Jinja2.
/// </summary>
public static partial class Filters
{
    private delegate object? Filter(CallSite site, object? value, CallArguments arguments);

    private static readonly Dictionary<string, Filter> All = new()
    {
        ["trim"] = Trim,
        ["length"] = (s, v, a) => { NoArguments("length", a); return PyOps.Length(v); },
        ["tojson"] = ToJson,
        ["first"] = First,
        ["last"] = Last,
        ["join"] = Join,
        ["default"] = Default,
        ["items"] = Items,
        ["list"] = (s, v, a) => { NoArguments("list", a); return PyOps.Iterate(FailIfUndefined(v)).ToList(); },
        ["map"] = Map,
        ["select"] = (s, v, a) => Select(s, v, a, keep: true, byAttribute: false),
        ["reject"] = (s, v, a) => Select(s, v, a, keep: false, byAttribute: false),
        ["selectattr"] = (s, v, a) => Select(s, v, a, keep: true, byAttribute: true),
        ["rejectattr"] = (s, v, a) => Select(s, v, a, keep: false, byAttribute: true),
        ["unique"] = Unique,
        ["sort"] = Sort,
        ["reverse"] = Reverse,
        ["string"] = (s, v, a) => { NoArguments("string", a); return PyOps.Str(v); },
        ["int"] = ToInt,
        ["float"] = ToFloat,
        ["abs"] = Abs,
        ["round"] = Round,
        ["indent"] = Indent,
        ["replace"] = Replace,
        ["upper"] = (s, v, a) => { NoArguments("upper", a); return PyOps.Str(v).ToUpperInvariant(); },
        ["lower"] = (s, v, a) => { NoArguments("lower", a); return PyOps.Str(v).ToLowerInvariant(); },
        ["capitalize"] = (s, v, a) => { NoArguments("capitalize", a); return TextUtil.Capitalize(PyOps.Str(v)); },
        ["title"] = (s, v, a) => { NoArguments("title", a); return JinjaTitle(PyOps.Str(v)); },
        ["safe"] = (s, v, a) => { NoArguments("safe", a); return v is Markup ? v : new Markup(PyOps.Str(v)); },
        ["escape"] = (s, v, a) => { NoArguments("escape", a); return v is Markup ? v : new Markup(Markup.Escape(v)); },
        ["batch"] = Batch,
        ["wordcount"] = (s, v, a) => { NoArguments("wordcount", a); return (long)WordPattern().Count(PyOps.Str(v)); },
        ["dictsort"] = DictSort,
        ["min"] = (s, v, a) => MinMax(s, v, a, "min", wantMax: false),
        ["max"] = (s, v, a) => MinMax(s, v, a, "max", wantMax: true),
        ["sum"] = Sum,
        ["attr"] = Attr,
        ["format"] = (s, v, a) => PrintfFormat.Format(PyOps.Str(v), a.Positional.Count == 1 ? a.Positional[0] : new PyTuple(a.Positional.ToList())),
        ["center"] = (s, v, a) => TextUtil.Center(PyOps.Str(v), (int)(long)(Bind("center", ["value", "width"], a).Get(1, 80L) ?? 80L)),
        ["truncate"] = Truncate,
        ["striptags"] = (s, v, a) => string.Join(' ', TagPattern().Replace(PyOps.Str(v), "").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)),
        ["pprint"] = (s, v, a) => PyOps.Repr(v),
    };

    static Filters()
    {
        All["count"] = All["length"];
        All["d"] = All["default"];
        All["e"] = All["escape"];
    }

    public static bool Exists(string name) => All.ContainsKey(name);

    public static object? Apply(string name, CallSite site, object? value, CallArguments arguments)
    {
        if (!All.TryGetValue(name, out var filter))
        {
            throw new PyError($"no filter named '{name}'");
        }
        return filter(site, value, arguments);
    }

    private static BoundArguments Bind(string filter, string[] parameters, CallArguments arguments) =>
        BoundArguments.Bind(filter, parameters, arguments, leading: 1);

    private static void NoArguments(string filter, CallArguments arguments)
    {
        if (arguments.Count > 0)
        {
            throw new PyError($"{filter}() takes 1 positional argument but {arguments.Count + 1} were given");
        }
    }

    private static object? FailIfUndefined(object? value) =>
        value is Undefined undefined ? throw new PyError(undefined.Hint, isUndefined: true) : value;

    private static object? Trim(CallSite site, object? value, CallArguments arguments)
    {
        var chars = Bind("trim", ["value", "chars"], arguments).Get(1);
        return TextUtil.Strip(PyOps.Str(value), chars as string, true, true);
    }

    /// <summary>transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).</summary>
    private static object? ToJson(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("tojson", ["x", "ensure_ascii", "indent", "separators", "sort_keys"], arguments);
        string? itemSeparator = null, keySeparator = null;
        if (bound.Get(3) is { } separators)
        {
            var pair = PyOps.AsSequence(separators);
            if (pair is not { Count: 2 } || pair[0] is not string || pair[1] is not string)
            {
                throw new PyError("separators must be a pair of strings");
            }
            itemSeparator = (string)pair[0]!;
            keySeparator = (string)pair[1]!;
        }
        return PyJson.Dumps(value, PyOps.IsTrue(bound.Get(1, false)), bound.Get(2), itemSeparator, keySeparator, PyOps.IsTrue(bound.Get(4, false)));
    }

    private static object? First(CallSite site, object? value, CallArguments arguments)
    {
        NoArguments("first", arguments);
        foreach (var item in PyOps.Iterate(value))
        {
            return item;
        }
        return new Undefined("No first item, sequence was empty.");
    }

    private static object? Last(CallSite site, object? value, CallArguments arguments)
    {
        NoArguments("last", arguments);
        var items = PyOps.Iterate(value).ToList();
        return items.Count > 0 ? items[^1] : new Undefined("No last item, sequence was empty.");
    }

    private static object? Join(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("join", ["value", "d", "attribute"], arguments);
        var separator = PyOps.Str(bound.Get(1, ""));
        var items = PyOps.Iterate(value);
        if (bound.Get(2) is { } attribute)
        {
            items = items.Select(item => AttributePath(site, item, attribute));
        }
        return string.Join(separator, items.Select(PyOps.Str));
    }

    /// <summary>Jinja2's attr filter looks up a Python attribute only, never a dict key.</summary>
    private static object? Attr(CallSite site, object? value, CallArguments arguments)
    {
        var name = PyOps.Str(Bind("attr", ["value", "name"], arguments).Required(1, "attr", "name"));
        return value switch
        {
            Namespace or LoopContext or Undefined => Access.GetAttribute(value, name, site),
            _ => Methods.TryBind(value, name, site.Options, out var method) ? method : Undefined.ForAttribute(value, name),
        };
    }

    private static object? Default(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("default", ["value", "default_value", "boolean"], arguments);
        var useDefault = value is Undefined || (PyOps.IsTrue(bound.Get(2, false)) && !PyOps.IsTrue(value));
        return useDefault ? bound.Get(1, "") : value;
    }

    private static object? Items(CallSite site, object? value, CallArguments arguments)
    {
        NoArguments("items", arguments);
        return value switch
        {
            Undefined => new List<object?>(),
            PyDict dict => dict.Entries.Select(e => (object?)new PyTuple([e.Key is PyDict.NoneKey ? null : e.Key, e.Value])).ToList(),
            _ => throw new PyError($"Can only get item pairs from a mapping, not {PyOps.TypeName(value)}"),
        };
    }

    /// <summary>Jinja2's attribute paths ("a.b", "items.0"): each part is looked up as an item, an integer part as an index.</summary>
    private static object? AttributePath(CallSite site, object? item, object? attribute)
    {
        if (attribute is long index)
        {
            return Access.GetItem(item, index, site);
        }
        foreach (var part in PyOps.Str(attribute).Split('.'))
        {
            object key = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var number) ? number : part;
            item = Access.GetItem(item, key, site);
        }
        return item;
    }

    private static object? Map(CallSite site, object? value, CallArguments arguments)
    {
        // Jinja2 maps and selects nothing when the value is falsy (None included) instead of failing to iterate.
        var items = PyOps.IsTrue(value) ? PyOps.Iterate(value).ToList() : [];
        var attribute = arguments.Named.FirstOrDefault(p => p.Key == "attribute");
        if (attribute.Key is not null)
        {
            var fallback = arguments.Named.FirstOrDefault(p => p.Key == "default");
            return items.Select(item =>
            {
                var result = AttributePath(site, item, attribute.Value);
                return result is Undefined && fallback.Key is not null ? fallback.Value : result;
            }).ToList();
        }
        if (arguments.Positional.Count == 0)
        {
            throw new PyError("map requires a filter argument");
        }
        var filter = PyOps.Str(arguments.Positional[0]);
        var rest = new CallArguments(arguments.Positional.Skip(1).ToList(), arguments.Named);
        return items.Select(item => Apply(filter, site, item, rest)).ToList();
    }

    private static object? Select(CallSite site, object? value, CallArguments arguments, bool keep, bool byAttribute)
    {
        var positional = arguments.Positional;
        var offset = 0;
        object? attribute = null;
        if (byAttribute)
        {
            if (positional.Count == 0)
            {
                throw new PyError("selectattr/rejectattr need an attribute name");
            }
            attribute = positional[0];
            offset = 1;
        }
        // An unknown test name fails only when there is an item to test, as in Jinja2.
        string? test = positional.Count > offset ? PyOps.Str(positional[offset]) : null;
        var testArguments = new CallArguments(positional.Skip(offset + 1).ToList(), arguments.Named);
        var result = new List<object?>();
        if (!PyOps.IsTrue(value))
        {
            return result;
        }
        foreach (var item in PyOps.Iterate(value))
        {
            var subject = byAttribute ? AttributePath(site, item, attribute) : item;
            var passed = test is null ? PyOps.IsTrue(subject) : Tests.Apply(test, site, subject, testArguments);
            if (passed == keep)
            {
                result.Add(item);
            }
        }
        return result;
    }

    /// <summary>The key Jinja2 sorts and compares by: lower-cased strings unless case_sensitive.</summary>
    private static object? SortKey(object? item, bool caseSensitive) =>
        !caseSensitive && item is string s ? s.ToLowerInvariant() : item;

    private static object? Unique(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("unique", ["value", "case_sensitive", "attribute"], arguments);
        var caseSensitive = PyOps.IsTrue(bound.Get(1, false));
        var attribute = bound.Get(2);
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var item in PyOps.Iterate(value))
        {
            var key = SortKey(attribute is null ? item : AttributePath(site, item, attribute), caseSensitive);
            if (!seen.Any(k => PyOps.PyEquals(k, key)))
            {
                seen.Add(key);
                result.Add(item);
            }
        }
        return result;
    }

    private static object? Sort(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("sort", ["value", "reverse", "case_sensitive", "attribute"], arguments);
        var reverse = PyOps.IsTrue(bound.Get(1, false));
        var caseSensitive = PyOps.IsTrue(bound.Get(2, false));
        var attribute = bound.Get(3);
        var items = PyOps.Iterate(value)
            .Select(item => (Item: item, Key: SortKey(attribute is null ? item : AttributePath(site, item, attribute), caseSensitive)))
            .ToList();
        // List.Sort is not stable; OrderBy is, like Python's sorted().
        var sorted = reverse
            ? items.OrderByDescending(x => x.Key, PyComparer.Instance)
            : items.OrderBy(x => x.Key, PyComparer.Instance);
        return sorted.Select(x => x.Item).ToList();
    }

    private sealed class PyComparer : IComparer<object?>
    {
        public static readonly PyComparer Instance = new();

        public int Compare(object? x, object? y) => PyOps.Compare(x, y);
    }

    private static object? Reverse(CallSite site, object? value, CallArguments arguments)
    {
        NoArguments("reverse", arguments);
        if (value is string s)
        {
            var characters = Access.CodePoints(s);
            return string.Concat(characters.Reverse());
        }
        var items = PyOps.Iterate(FailIfUndefined(value)).ToList();
        items.Reverse();
        return items;
    }

    private static object? ToInt(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("int", ["value", "default", "base"], arguments);
        var fallback = bound.Get(1, 0L);
        var numberBase = bound.Get(2, 10L) is long b ? (int)b : 10;
        switch (value)
        {
            case long or bool:
                return value is bool flag ? (flag ? 1L : 0L) : value;
            case double d:
                return double.IsFinite(d) ? (long)Math.Truncate(d) : fallback;
            case string s:
                var text = s.Trim().Replace("_", "", StringComparison.Ordinal);
                try
                {
                    if (numberBase != 10)
                    {
                        var digits = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || text.StartsWith("0b", StringComparison.OrdinalIgnoreCase)
                            || text.StartsWith("0o", StringComparison.OrdinalIgnoreCase) ? text[2..] : text;
                        return Convert.ToInt64(digits, numberBase);
                    }
                }
                catch (Exception error) when (error is FormatException or ArgumentException or OverflowException)
                {
                    return fallback;
                }
                if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
                {
                    return integer;
                }
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var real) && double.IsFinite(real)
                    ? (long)Math.Truncate(real)
                    : fallback;
            default:
                return fallback;
        }
    }

    private static object? ToFloat(CallSite site, object? value, CallArguments arguments)
    {
        var fallback = Bind("float", ["value", "default"], arguments).Get(1, 0.0);
        return value switch
        {
            long l => (double)l,
            bool b => b ? 1.0 : 0.0,
            double d => d,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed) => parsed,
            _ => fallback,
        };
    }

    private static object? Abs(CallSite site, object? value, CallArguments arguments)
    {
        NoArguments("abs", arguments);
        return value switch
        {
            // Casts keep each arm's type: without them C# would make every result a double.
            long l => (object)checked(Math.Abs(l)),
            double d => (object)Math.Abs(d),
            bool b => (object)(b ? 1L : 0L),
            _ => throw new PyError($"bad operand type for abs(): '{PyOps.TypeName(value)}'"),
        };
    }

    private static object? Round(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("round", ["value", "precision", "method"], arguments);
        var precision = (int)(bound.Get(1, 0L) is long p ? p : 0);
        var method = PyOps.Str(bound.Get(2, "common"));
        var number = PyOps.ToDouble(FailIfUndefined(value));
        var scale = Math.Pow(10, precision);
        return method switch
        {
            "common" => RoundHalfEven(number, precision),
            "ceil" => Math.Ceiling(number * scale) / scale,
            "floor" => Math.Floor(number * scale) / scale,
            _ => throw new PyError("method must be common, ceil or floor"),
        };
    }

    /// <summary>
    /// Python's round(): half to even, decided on the double's exact value (round(2.675, 2) is 2.67 because 2.675 is
    /// stored as 2.67499999…); 17 significant digits carry that value into decimal.
    /// </summary>
    private static double RoundHalfEven(double number, int precision)
    {
        if (!double.IsFinite(number) || precision > 15 || Math.Abs(number) >= 7.9e27)
        {
            return number;
        }
        if (precision < 0)
        {
            var scale = Math.Pow(10, -precision);
            return Math.Round(number / scale, MidpointRounding.ToEven) * scale;
        }
        var exact = decimal.Parse(number.ToString("G17", CultureInfo.InvariantCulture), NumberStyles.Float, CultureInfo.InvariantCulture);
        return (double)decimal.Round(exact, precision, MidpointRounding.ToEven);
    }

    /// <summary>Jinja2's indent: appends "\n" before splitting lines, indents every line but the first (unless first=True).</summary>
    private static object? Indent(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("indent", ["s", "width", "first", "blank"], arguments);
        var width = bound.Get(1, 4L);
        var indentation = width is string w ? w : new string(' ', (int)Math.Max(0, width is long n ? n : 4));
        var first = PyOps.IsTrue(bound.Get(2, false));
        var blank = PyOps.IsTrue(bound.Get(3, false));
        var text = PyOps.Str(value) + "\n";
        var lines = TextUtil.SplitLines(text, keepEnds: false);
        string result;
        if (blank)
        {
            result = string.Join("\n" + indentation, lines);
        }
        else
        {
            var builder = new StringBuilder(lines.Count > 0 ? lines[0] : "");
            if (lines.Count > 1)
            {
                builder.Append('\n');
                builder.Append(string.Join("\n", lines.Skip(1).Select(line => line.Length > 0 ? indentation + line : line)));
            }
            result = builder.ToString();
        }
        return first ? indentation + result : result;
    }

    private static object? Replace(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("replace", ["s", "old", "new", "count"], arguments);
        return TextUtil.Replace(PyOps.Str(value), PyOps.Str(bound.Required(1, "replace", "old")), PyOps.Str(bound.Required(2, "replace", "new")), bound.Get(3));
    }

    /// <summary>Jinja2's title filter: capitalise each word, words starting after whitespace or one of - ( { [ &lt;.</summary>
    private static string JinjaTitle(string text)
    {
        var builder = new StringBuilder();
        foreach (var part in WordBeginning().Split(text))
        {
            if (part.Length > 0)
            {
                builder.Append(char.ToUpperInvariant(part[0])).Append(part[1..].ToLowerInvariant());
            }
        }
        return builder.ToString();
    }

    private static object? Batch(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("batch", ["value", "linecount", "fill_with"], arguments);
        var size = bound.Required(1, "batch", "linecount") is long n && n > 0 ? n : throw new PyError("batch size must be a positive integer");
        var fill = bound.Has(2);
        var result = new List<object?>();
        List<object?>? current = null;
        foreach (var item in PyOps.Iterate(value))
        {
            current ??= [];
            current.Add(item);
            if (current.Count == size)
            {
                result.Add(current);
                current = null;
            }
        }
        if (current is not null)
        {
            while (fill && current.Count < size)
            {
                current.Add(bound.Get(2));
            }
            result.Add(current);
        }
        return result;
    }

    private static object? DictSort(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("dictsort", ["value", "case_sensitive", "by", "reverse"], arguments);
        if (value is not PyDict dict)
        {
            throw new PyError("dictsort needs a mapping");
        }
        var caseSensitive = PyOps.IsTrue(bound.Get(1, false));
        var byValue = PyOps.Str(bound.Get(2, "key")) switch
        {
            "key" => false,
            "value" => true,
            _ => throw new PyError("You can only sort by either \"key\" or \"value\""),
        };
        var pairs = dict.Entries.Select(e => (Key: e.Key is PyDict.NoneKey ? null : e.Key, e.Value)).ToList();
        var ordered = pairs.OrderBy(p => SortKey(byValue ? p.Value : p.Key, caseSensitive), PyComparer.Instance).ToList();
        if (PyOps.IsTrue(bound.Get(3, false)))
        {
            ordered.Reverse();
        }
        return ordered.Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList();
    }

    private static object? MinMax(CallSite site, object? value, CallArguments arguments, string name, bool wantMax)
    {
        var bound = Bind(name, ["value", "case_sensitive", "attribute"], arguments);
        var caseSensitive = PyOps.IsTrue(bound.Get(1, false));
        var attribute = bound.Get(2);
        object? best = null;
        object? bestKey = null;
        var any = false;
        foreach (var item in PyOps.Iterate(value))
        {
            var key = SortKey(attribute is null ? item : AttributePath(site, item, attribute), caseSensitive);
            if (!any || (wantMax ? PyOps.Compare(key, bestKey) > 0 : PyOps.Compare(key, bestKey) < 0))
            {
                best = item;
                bestKey = key;
                any = true;
            }
        }
        return any ? best : new Undefined($"No aggregated item, sequence was empty.");
    }

    private static object? Sum(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("sum", ["iterable", "attribute", "start"], arguments);
        var total = bound.Get(2, 0L);
        var attribute = bound.Get(1);
        foreach (var item in PyOps.Iterate(value))
        {
            total = Operators.Binary("+", total, attribute is null ? item : AttributePath(site, item, attribute), site.Options);
        }
        return total;
    }

    private static object? Truncate(CallSite site, object? value, CallArguments arguments)
    {
        var bound = Bind("truncate", ["s", "length", "killwords", "end", "leeway"], arguments);
        var text = PyOps.Str(value);
        var length = (int)(bound.Get(1, 255L) is long l ? l : 255);
        var killWords = PyOps.IsTrue(bound.Get(2, false));
        var end = PyOps.Str(bound.Get(3, "..."));
        var leeway = (int)(bound.Get(4, 5L) is long w ? w : 5);
        if (text.Length <= length + leeway)
        {
            return text;
        }
        if (killWords)
        {
            return text[..Math.Max(0, length - end.Length)] + end;
        }
        var cut = text[..Math.Max(0, length - end.Length)];
        var space = cut.LastIndexOf(' ');
        return (space >= 0 ? cut[..space] : cut) + end;
    }

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordPattern();

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBeginning();

    [GeneratedRegex(@"(<!--.*?-->|<[^>]*>)", RegexOptions.Singleline)]
    private static partial Regex TagPattern();
}
