using System.Text;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// Arithmetic, concatenation and comparison with Python's rules: <c>/</c> always gives a float, <c>//</c> and
/// <c>%</c> floor towards negative infinity, bool counts as int, <c>+</c> joins strings or lists but never a string and
/// a number, and <c>~</c> joins the str() of anything (Undefined as empty).
/// </summary>
public static class Operators
{
    public static object? Unary(string op, object? operand)
    {
        FailIfUndefined(operand);
        return (op, operand) switch
        {
            // Casts keep each arm's type: without them C# would make every result a double.
            ("-", long l) => (object)checked(-l),
            ("-", double d) => (object)(-d),
            ("-", bool b) => (object)(b ? -1L : 0L),
            ("+", long or double) => operand,
            ("+", bool b) => (object)(b ? 1L : 0L),
            _ => throw new PyError($"bad operand type for unary {op}: '{PyOps.TypeName(operand)}'"),
        };
    }

    private static void FailIfUndefined(object? value)
    {
        if (value is Undefined undefined)
        {
            throw new PyError(undefined.Hint, isUndefined: true);
        }
    }

    public static object? Binary(string op, object? left, object? right, TemplateOptions options)
    {
        if (op == "~")
        {
            var joined = PyOps.Str(left) + PyOps.Str(right);
            return CheckLength(joined, options);
        }
        FailIfUndefined(left);
        FailIfUndefined(right);
        try
        {
            return op switch
            {
                "+" => Add(left, right, options),
                "-" => Arithmetic(op, left, right, (a, b) => checked(a - b), (a, b) => a - b),
                "*" => Multiply(left, right, options),
                "/" => TrueDivide(left, right),
                "//" => FloorDivide(left, right),
                "%" => Modulo(left, right),
                "**" => Power(left, right),
                _ => throw new PyError($"unknown operator {op}"),
            };
        }
        catch (OverflowException)
        {
            throw new PyError("integer overflow");
        }
    }

    private static string CheckLength(string text, TemplateOptions options) =>
        text.Length > options.MaxOutputLength ? throw new PyError($"string longer than {options.MaxOutputLength} characters") : text;

    private static PyError Unsupported(string op, object? left, object? right) =>
        new($"unsupported operand type(s) for {op}: '{PyOps.TypeName(left)}' and '{PyOps.TypeName(right)}'");

    private static object? Add(object? left, object? right, TemplateOptions options)
    {
        if (left is Markup || right is Markup)
        {
            // markupsafe: Markup + str escapes the plain operand, whichever side it is on.
            if (Markup.TextOf(left) is null || Markup.TextOf(right) is null)
            {
                throw new PyError($"unsupported operand type(s) for +: '{PyOps.TypeName(left)}' and '{PyOps.TypeName(right)}'");
            }
            return new Markup(CheckLength(Markup.Escape(left) + Markup.Escape(right), options));
        }
        switch (left)
        {
            case string a:
                return right is string b
                    ? CheckLength(a + b, options)
                    : throw new PyError($"can only concatenate str (not \"{PyOps.TypeName(right)}\") to str");
            case List<object?> a:
                if (right is not List<object?> listB)
                {
                    throw new PyError($"can only concatenate list (not \"{PyOps.TypeName(right)}\") to list");
                }
                return new List<object?>(a.Concat(listB));
            case PyTuple a:
                if (right is not PyTuple tupleB)
                {
                    throw new PyError($"can only concatenate tuple (not \"{PyOps.TypeName(right)}\") to tuple");
                }
                return new PyTuple([.. a.Items, .. tupleB.Items]);
        }
        return Arithmetic("+", left, right, (a, b) => checked(a + b), (a, b) => a + b);
    }

    private static object Arithmetic(string op, object? left, object? right, Func<long, long, long> integer, Func<double, double, double> real)
    {
        if (!PyOps.IsNumber(left) || !PyOps.IsNumber(right))
        {
            throw Unsupported(op, left, right);
        }
        if (left is double || right is double)
        {
            return real(PyOps.ToDouble(left), PyOps.ToDouble(right));
        }
        return integer(ToLong(left), ToLong(right));
    }

    private static long ToLong(object? value) => value switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new PyError($"expected an integer, got {PyOps.TypeName(value)}"),
    };

    private static object Multiply(object? left, object? right, TemplateOptions options)
    {
        if ((left is string or List<object?>) && right is long or bool)
        {
            return Repeat(left, ToLong(right), options);
        }
        if ((right is string or List<object?>) && left is long or bool)
        {
            return Repeat(right, ToLong(left), options);
        }
        return Arithmetic("*", left, right, (a, b) => checked(a * b), (a, b) => a * b);
    }

    private static object Repeat(object? sequence, long count, TemplateOptions options)
    {
        count = Math.Max(0, count);
        if (sequence is string s)
        {
            if (s.Length * count > options.MaxOutputLength)
            {
                throw new PyError($"string longer than {options.MaxOutputLength} characters");
            }
            return new StringBuilder(s.Length * (int)count).Insert(0, s, (int)count).ToString();
        }
        var list = (List<object?>)sequence!;
        if (list.Count * count > options.MaxOutputLength)
        {
            throw new PyError("list too large");
        }
        var result = new List<object?>();
        for (var i = 0; i < count; i++)
        {
            result.AddRange(list);
        }
        return result;
    }

    private static object TrueDivide(object? left, object? right)
    {
        if (!PyOps.IsNumber(left) || !PyOps.IsNumber(right))
        {
            throw Unsupported("/", left, right);
        }
        var divisor = PyOps.ToDouble(right);
        if (divisor == 0)
        {
            throw new PyError("division by zero");
        }
        return PyOps.ToDouble(left) / divisor;
    }

    private static object FloorDivide(object? left, object? right)
    {
        if (!PyOps.IsNumber(left) || !PyOps.IsNumber(right))
        {
            throw Unsupported("//", left, right);
        }
        if (left is double || right is double)
        {
            var divisor = PyOps.ToDouble(right);
            return divisor == 0 ? throw new PyError("float floor division by zero") : Math.Floor(PyOps.ToDouble(left) / divisor);
        }
        var a = ToLong(left);
        var b = ToLong(right);
        if (b == 0)
        {
            throw new PyError("integer division or modulo by zero");
        }
        var quotient = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? quotient - 1 : quotient;
    }

    private static object Modulo(object? left, object? right)
    {
        if (left is string format)
        {
            return PrintfFormat.Format(format, right);
        }
        if (!PyOps.IsNumber(left) || !PyOps.IsNumber(right))
        {
            throw Unsupported("%", left, right);
        }
        if (left is double || right is double)
        {
            var divisor = PyOps.ToDouble(right);
            if (divisor == 0)
            {
                throw new PyError("float modulo");
            }
            var remainder = PyOps.ToDouble(left) % divisor;
            return remainder != 0 && (remainder < 0) != (divisor < 0) ? remainder + divisor : remainder;
        }
        var a = ToLong(left);
        var b = ToLong(right);
        if (b == 0)
        {
            throw new PyError("integer division or modulo by zero");
        }
        var r = a % b;
        return r != 0 && (r < 0) != (b < 0) ? r + b : r;
    }

    private static object Power(object? left, object? right)
    {
        if (!PyOps.IsNumber(left) || !PyOps.IsNumber(right))
        {
            throw Unsupported("** or pow()", left, right);
        }
        if (left is double || right is double || ToLong(right) < 0)
        {
            return Math.Pow(PyOps.ToDouble(left), PyOps.ToDouble(right));
        }
        long result = 1, baseValue = ToLong(left), exponent = ToLong(right);
        while (exponent > 0)
        {
            if ((exponent & 1) == 1)
            {
                result = checked(result * baseValue);
            }
            exponent >>= 1;
            if (exponent > 0)
            {
                baseValue = checked(baseValue * baseValue);
            }
        }
        return result;
    }

    public static bool Compare(string op, object? left, object? right)
    {
        switch (op)
        {
            case "==": return PyOps.PyEquals(left, right);
            case "!=": return !PyOps.PyEquals(left, right);
            case "in": return PyOps.Contains(right, left);
            case "not in": return !PyOps.Contains(right, left);
        }
        FailIfUndefined(left);
        FailIfUndefined(right);
        if (!Comparable(left, right))
        {
            var symbol = op;
            throw new PyError($"'{symbol}' not supported between instances of '{PyOps.TypeName(left)}' and '{PyOps.TypeName(right)}'");
        }
        var order = PyOps.Compare(left, right);
        return op switch
        {
            "<" => order < 0,
            "<=" => order <= 0,
            ">" => order > 0,
            _ => order >= 0,
        };
    }

    private static bool Comparable(object? left, object? right) =>
        (PyOps.IsNumber(left) && PyOps.IsNumber(right))
        || (Markup.TextOf(left) is not null && Markup.TextOf(right) is not null)
        || (left is List<object?> && right is List<object?>)
        || (left is PyTuple && right is PyTuple);
}
