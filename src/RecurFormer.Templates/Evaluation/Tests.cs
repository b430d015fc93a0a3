using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>The tests of <c>x is name</c> (and of <c>select</c>/<c>selectattr</c>), with Jinja2's definitions.</summary>
public static class Tests
{
    private delegate bool Test(CallSite site, object? value, CallArguments arguments);

    private static readonly Dictionary<string, Test> All = new()
    {
        ["defined"] = (s, v, a) => v is not Undefined,
        ["undefined"] = (s, v, a) => v is Undefined,
        ["none"] = (s, v, a) => v is null,
        ["boolean"] = (s, v, a) => v is bool,
        ["true"] = (s, v, a) => v is true,
        ["false"] = (s, v, a) => v is false,
        ["integer"] = (s, v, a) => v is long,
        ["float"] = (s, v, a) => v is double,
        ["number"] = (s, v, a) => v is long or double or bool,
        ["string"] = (s, v, a) => v is string or Markup,
        ["mapping"] = (s, v, a) => v is PyDict,
        ["sequence"] = (s, v, a) => v is string or Markup or List<object?> or PyTuple or PyDict or Undefined,
        // Undefined iterates (as empty), so Jinja2 calls it iterable.
        ["iterable"] = (s, v, a) => v is string or Markup or List<object?> or PyTuple or PyDict or Undefined,
        ["callable"] = (s, v, a) => v is PyCallable,
        ["odd"] = (s, v, a) => Integer(v, "odd") % 2 != 0,
        ["even"] = (s, v, a) => Integer(v, "even") % 2 == 0,
        ["divisibleby"] = (s, v, a) => Integer(Argument(a, "divisibleby"), "divisibleby") is var divisor && divisor != 0
            ? Integer(v, "divisibleby") % divisor == 0
            : throw new PyError("integer modulo by zero"),
        ["eq"] = (s, v, a) => PyOps.PyEquals(v, Argument(a, "eq")),
        ["ne"] = (s, v, a) => !PyOps.PyEquals(v, Argument(a, "ne")),
        ["lt"] = (s, v, a) => Operators.Compare("<", v, Argument(a, "lt")),
        ["le"] = (s, v, a) => Operators.Compare("<=", v, Argument(a, "le")),
        ["gt"] = (s, v, a) => Operators.Compare(">", v, Argument(a, "gt")),
        ["ge"] = (s, v, a) => Operators.Compare(">=", v, Argument(a, "ge")),
        ["in"] = (s, v, a) => PyOps.Contains(Argument(a, "in"), v),
        ["sameas"] = (s, v, a) => SameAs(v, Argument(a, "sameas")),
        ["lower"] = (s, v, a) => PyOps.Str(v) is var text && text.Any(char.IsLetter) && !text.Any(char.IsUpper),
        ["upper"] = (s, v, a) => PyOps.Str(v) is var text && text.Any(char.IsLetter) && !text.Any(char.IsLower),
        ["escaped"] = (s, v, a) => v is Markup,
        ["filter"] = (s, v, a) => v is string name && Filters.Exists(name),
        ["test"] = (s, v, a) => v is string name && Exists(name),
    };

    static Tests()
    {
        All["equalto"] = All["=="] = All["eq"];
        All["!="] = All["ne"];
        All["lessthan"] = All["<"] = All["lt"];
        All["<="] = All["le"];
        All["greaterthan"] = All[">"] = All["gt"];
        All[">="] = All["ge"];
    }

    public static bool Exists(string name) => All.ContainsKey(name);

    public static bool Apply(string name, CallSite site, object? value, CallArguments arguments)
    {
        if (!All.TryGetValue(name, out var test))
        {
            throw new PyError($"no test named '{name}'");
        }
        if (arguments.Count > 0 && !TakesArgument.Contains(name))
        {
            throw new PyError($"test_{name}() takes 1 positional argument but {arguments.Count + 1} were given");
        }
        return test(site, value, arguments);
    }

    private static readonly HashSet<string> TakesArgument =
        ["divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas"];

    private static object? Argument(CallArguments arguments, string test)
    {
        if (arguments.Count != 1)
        {
            throw new PyError($"the '{test}' test takes exactly one argument ({arguments.Count} given)");
        }
        return arguments.Positional.Count == 1 ? arguments.Positional[0] : arguments.Named[0].Value;
    }

    private static long Integer(object? value, string test) => value switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d when d == Math.Floor(d) => (long)d,
        Undefined u => throw new PyError(u.Hint, isUndefined: true),
        _ => throw new PyError($"the '{test}' test needs an integer, got {PyOps.TypeName(value)}"),
    };

    /// <summary>Python's <c>is</c>: identity, which for None, booleans and small values means equal and same type.</summary>
    private static bool SameAs(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (bool x, bool y) => x == y,
        (long x, long y) => x == y,
        (string x, string y) => ReferenceEquals(x, y) || x == y,
        _ => ReferenceEquals(a, b),
    };
}
