using System.Globalization;
using System.Text;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>Python's <c>"%s" % value</c> formatting (also the <c>format</c> filter), for %s, %r, %d, %i, %f and %%.</summary>
public static class PrintfFormat
{
    public static string Format(string format, object? arguments)
    {
        var values = arguments is PyTuple tuple ? tuple.Items : [arguments];
        var builder = new StringBuilder();
        var next = 0;
        for (var i = 0; i < format.Length; i++)
        {
            var c = format[i];
            if (c != '%')
            {
                builder.Append(c);
                continue;
            }
            if (++i >= format.Length)
            {
                throw new PyError("incomplete format");
            }
            var start = i;
            while (i < format.Length && (char.IsAsciiDigit(format[i]) || format[i] is '.' or '-' or '+' or ' ' or '0'))
            {
                i++;
            }
            var spec = format[start..i];
            var kind = format[i];
            if (kind == '%')
            {
                builder.Append('%');
                continue;
            }
            if (next >= values.Count)
            {
                throw new PyError("not enough arguments for format string");
            }
            var value = values[next++];
            var text = kind switch
            {
                's' => PyOps.Str(value),
                'r' => PyOps.Repr(value),
                'd' or 'i' => ((long)Math.Truncate(PyOps.ToDouble(value))).ToString(CultureInfo.InvariantCulture),
                'f' => PyOps.ToDouble(value).ToString("F" + (spec.Contains('.') ? spec[(spec.IndexOf('.') + 1)..] : "6"), CultureInfo.InvariantCulture),
                _ => throw new PyError($"unsupported format character '{kind}'"),
            };
            var widthText = spec.Contains('.') ? spec[..spec.IndexOf('.')] : spec;
            widthText = widthText.TrimStart('-', '+', ' ', '0');
            if (int.TryParse(widthText, CultureInfo.InvariantCulture, out var width))
            {
                text = spec.StartsWith('-') ? text.PadRight(width) : text.PadLeft(width);
            }
            builder.Append(text);
        }
        if (next < values.Count && arguments is PyTuple)
        {
            throw new PyError("not all arguments converted during string formatting");
        }
        return builder.ToString();
    }
}
