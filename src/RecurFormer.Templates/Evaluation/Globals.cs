using System.Globalization;
using System.Text;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// Functions every template can call: Jinja2's <c>range</c> (capped as the sandbox caps it), <c>dict</c>,
/// <c>namespace</c>, <c>cycler</c>, <c>joiner</c>, and the two transformers adds, <c>raise_exception</c> and
/// <c>strftime_now</c>. Template variables shadow them.
/// </summary>
public static class Globals
{
    /// <summary>Jinja2's sandbox refuses ranges longer than this (MAX_RANGE).</summary>
    public const int MaxRange = 100_000;

    private static readonly Dictionary<string, object?> Functions = new()
    {
        ["range"] = new BuiltinFunction("range", Range),
        ["dict"] = new BuiltinFunction("dict", MakeDict),
        ["namespace"] = new BuiltinFunction("namespace", MakeNamespace),
        ["raise_exception"] = new BuiltinFunction("raise_exception", RaiseException),
        ["strftime_now"] = new BuiltinFunction("strftime_now", StrftimeNow),
        ["joiner"] = new BuiltinFunction("joiner", MakeJoiner),
        ["cycler"] = new BuiltinFunction("cycler", MakeCycler),
    };

    public static bool TryGet(string name, out object? value) => Functions.TryGetValue(name, out value);

    private static object? Range(CallSite site, CallArguments arguments)
    {
        if (arguments.Named.Count > 0)
        {
            throw new PyError("range() takes no keyword arguments");
        }
        var values = arguments.Positional.Select(v => v switch
        {
            long l => l,
            bool b => b ? 1L : 0L,
            _ => throw new PyError($"'{PyOps.TypeName(v)}' object cannot be interpreted as an integer"),
        }).ToList();
        var (start, stop, step) = values.Count switch
        {
            1 => (0L, values[0], 1L),
            2 => (values[0], values[1], 1L),
            3 => (values[0], values[1], values[2]),
            _ => throw new PyError($"range expected 1 to 3 arguments, got {values.Count}"),
        };
        if (step == 0)
        {
            throw new PyError("range() arg 3 must not be zero");
        }
        var count = step > 0 ? (stop - start + step - 1) / step : (start - stop - step - 1) / -step;
        count = Math.Max(0, count);
        if (count > MaxRange)
        {
            throw new PyError($"Range too big. The sandbox blocks ranges larger than MAX_RANGE ({MaxRange}).");
        }
        var result = new List<object?>((int)count);
        for (var i = 0L; i < count; i++)
        {
            result.Add(start + i * step);
        }
        return result;
    }

    private static object? MakeDict(CallSite site, CallArguments arguments)
    {
        var dict = new PyDict();
        if (arguments.Positional.Count > 1)
        {
            throw new PyError($"dict expected at most 1 argument, got {arguments.Positional.Count}");
        }
        if (arguments.Positional.Count == 1)
        {
            CopyInto(dict, arguments.Positional[0]);
        }
        foreach (var (name, value) in arguments.Named)
        {
            dict.Set(name, value);
        }
        return dict;
    }

    private static void CopyInto(PyDict target, object? source)
    {
        if (source is Undefined undefined)
        {
            // dict(x) looks up x.keys, which fails on an undefined value.
            throw new PyError(undefined.Hint, isUndefined: true);
        }
        if (source is PyDict other)
        {
            foreach (var (key, value) in other.Entries)
            {
                target.Set(key is PyDict.NoneKey ? null : key, value);
            }
            return;
        }
        foreach (var pair in PyOps.Iterate(source))
        {
            var items = PyOps.AsSequence(pair);
            if (items is null || items.Count != 2)
            {
                throw new PyError("dictionary update sequence element has wrong length; 2 is required");
            }
            target.Set(items[0], items[1]);
        }
    }

    private static object? MakeNamespace(CallSite site, CallArguments arguments)
    {
        var ns = new Namespace();
        foreach (var positional in arguments.Positional)
        {
            CopyInto(ns.Attributes, positional);
        }
        foreach (var (name, value) in arguments.Named)
        {
            ns.Attributes.Set(name, value);
        }
        return ns;
    }

    private static object? RaiseException(CallSite site, CallArguments arguments)
    {
        var message = arguments.Positional.Count > 0 ? PyOps.Str(arguments.Positional[0]) : "";
        throw new TemplateRaisedException(message, site.Line, site.Column);
    }

    private static object? StrftimeNow(CallSite site, CallArguments arguments)
    {
        if (arguments.Positional.Count != 1 || arguments.Positional[0] is not string format)
        {
            throw new PyError("strftime_now() takes one string argument, the format");
        }
        return Strftime(site.Options.Now(), format);
    }

    /// <summary>C/Python strftime for the directives templates use, plus glibc's "%-d" (no padding).</summary>
    public static string Strftime(DateTime time, string format)
    {
        var culture = CultureInfo.InvariantCulture;
        var builder = new StringBuilder();
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                builder.Append(format[i]);
                continue;
            }
            var noPad = format[i + 1] == '-' && i + 2 < format.Length;
            var directive = noPad ? format[i + 2] : format[i + 1];
            i += noPad ? 2 : 1;
            string Pad(int value, int width) => noPad ? value.ToString(culture) : value.ToString(new string('0', width), culture);
            builder.Append(directive switch
            {
                'Y' => time.Year.ToString(culture),
                'y' => Pad(time.Year % 100, 2),
                'm' => Pad(time.Month, 2),
                'd' => Pad(time.Day, 2),
                'e' => time.Day.ToString(culture).PadLeft(2),
                'H' => Pad(time.Hour, 2),
                'I' => Pad(time.Hour % 12 == 0 ? 12 : time.Hour % 12, 2),
                'M' => Pad(time.Minute, 2),
                'S' => Pad(time.Second, 2),
                'j' => Pad(time.DayOfYear, 3),
                'p' => time.Hour < 12 ? "AM" : "PM",
                'b' or 'h' => culture.DateTimeFormat.GetAbbreviatedMonthName(time.Month),
                'B' => culture.DateTimeFormat.GetMonthName(time.Month),
                'a' => culture.DateTimeFormat.GetAbbreviatedDayName(time.DayOfWeek),
                'A' => culture.DateTimeFormat.GetDayName(time.DayOfWeek),
                'w' => ((int)time.DayOfWeek).ToString(culture),
                'F' => time.ToString("yyyy-MM-dd", culture),
                'T' => time.ToString("HH:mm:ss", culture),
                'Z' or 'z' => "",
                '%' => "%",
                _ => "%" + directive,
            });
        }
        return builder.ToString();
    }

    private static object? MakeJoiner(CallSite site, CallArguments arguments)
    {
        var separator = arguments.Positional.Count > 0 ? PyOps.Str(arguments.Positional[0]) : ", ";
        var used = false;
        return new BuiltinFunction("joiner", (s, a) =>
        {
            if (!used)
            {
                used = true;
                return "";
            }
            return separator;
        });
    }

    private static object? MakeCycler(CallSite site, CallArguments arguments)
    {
        var items = arguments.Positional.ToList();
        var position = 0;
        var cycler = new Namespace();
        cycler.Attributes.Set("next", new BuiltinFunction("next", (s, a) =>
        {
            var item = items.Count == 0 ? null : items[position % items.Count];
            position++;
            return item;
        }));
        return cycler;
    }
}
