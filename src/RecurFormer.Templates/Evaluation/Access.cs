using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// <c>x.name</c>, <c>x[key]</c> and <c>x[a:b:c]</c> as Jinja2 resolves them: <c>x.name</c> looks for a Python attribute
/// (a method such as <c>items</c>) before a dict key, <c>x[key]</c> the other way round; whatever is missing becomes an
/// Undefined that remembers what was asked for, and only accessing something on an Undefined is an error.
/// </summary>
public static class Access
{
    public static object? GetAttribute(object? owner, string name, CallSite site)
    {
        switch (owner)
        {
            case Undefined undefined:
                throw new PyError(undefined.Hint, isUndefined: true);
            case PyDict dict:
                if (Methods.TryBind(dict, name, site.Options, out var dictMethod))
                {
                    return dictMethod;
                }
                return dict.TryGet(name, out var value) ? value : Undefined.ForAttribute(owner, name);
            case Namespace ns:
                return ns.Attributes.TryGet(name, out var attribute) ? attribute : Undefined.ForAttribute(owner, name);
            case LoopContext loop:
                return loop.GetAttribute(name);
            default:
                return Methods.TryBind(owner, name, site.Options, out var method) ? method : Undefined.ForAttribute(owner, name);
        }
    }

    public static object? GetItem(object? owner, object? key, CallSite site)
    {
        if (owner is Markup markup)
        {
            owner = markup.Text;
        }
        switch (owner)
        {
            case Undefined undefined:
                throw new PyError(undefined.Hint, isUndefined: true);
            case PyDict dict:
                if (dict.TryGet(key, out var value))
                {
                    return value;
                }
                break;
            case List<object?> or PyTuple or string when key is long or bool:
                var index = key is bool b ? (b ? 1 : 0) : (long)key;
                if (owner is string text)
                {
                    var characters = CodePoints(text);
                    var i = index < 0 ? index + characters.Count : index;
                    if (i >= 0 && i < characters.Count)
                    {
                        return characters[(int)i];
                    }
                }
                else
                {
                    var items = PyOps.AsSequence(owner)!;
                    var i = index < 0 ? index + items.Count : index;
                    if (i >= 0 && i < items.Count)
                    {
                        return items[(int)i];
                    }
                }
                return Undefined.ForItem(owner, key);
            case Namespace ns when key is string:
                if (ns.Attributes.TryGet(key, out var attribute))
                {
                    return attribute;
                }
                break;
            case LoopContext loop when key is string loopKey:
                return loop.GetAttribute(loopKey);
        }
        if (key is string name)
        {
            return Methods.TryBind(owner, name, site.Options, out var method) ? method : Undefined.ForAttribute(owner, name);
        }
        return Undefined.ForItem(owner, key);
    }

    /// <summary>Splits a string into code points, so indexes and slices count characters the way Python does.</summary>
    public static IReadOnlyList<string> CodePoints(string text)
    {
        if (!text.Any(char.IsSurrogate))
        {
            var chars = new string[text.Length];
            for (var i = 0; i < text.Length; i++)
            {
                chars[i] = text[i].ToString();
            }
            return chars;
        }
        return PyOps.TextElements(text).Cast<string>().ToList();
    }

    public static object? Slice(object? owner, object? start, object? stop, object? step)
    {
        if (owner is Undefined undefined)
        {
            throw new PyError(undefined.Hint, isUndefined: true);
        }
        if (!IsIndex(start) || !IsIndex(stop) || !IsIndex(step))
        {
            return new Undefined("slice indices must be integers or None");
        }
        if (owner is Markup markup)
        {
            owner = markup.Text;
        }
        IReadOnlyList<object?> items;
        IReadOnlyList<string>? characters = null;
        switch (owner)
        {
            case string text:
                characters = CodePoints(text);
                items = characters.Cast<object?>().ToList();
                break;
            case List<object?> or PyTuple:
                items = PyOps.AsSequence(owner)!;
                break;
            default:
                return new Undefined($"'{PyOps.TypeName(owner)}' object is not subscriptable");
        }
        var stepValue = step is null ? 1 : ToIndex(step);
        if (stepValue == 0)
        {
            throw new PyError("slice step cannot be zero");
        }
        var length = items.Count;
        long Clamp(object? bound, long whenNone, long low, long high)
        {
            if (bound is null)
            {
                return whenNone;
            }
            var value = ToIndex(bound);
            if (value < 0)
            {
                value += length;
            }
            return Math.Clamp(value, low, high);
        }
        long from, to;
        if (stepValue > 0)
        {
            from = Clamp(start, 0, 0, length);
            to = Clamp(stop, length, 0, length);
        }
        else
        {
            from = Clamp(start, length - 1, -1, length - 1);
            to = Clamp(stop, -1, -1, length - 1);
        }
        var result = new List<object?>();
        for (var i = from; stepValue > 0 ? i < to : i > to; i += stepValue)
        {
            result.Add(items[(int)i]);
        }
        return owner switch
        {
            string => string.Concat(result.Cast<string>()),
            PyTuple => new PyTuple(result),
            _ => result,
        };
    }

    private static bool IsIndex(object? value) => value is null or long or bool;

    private static long ToIndex(object? value) => value is bool b ? (b ? 1 : 0) : (long)value!;
}
