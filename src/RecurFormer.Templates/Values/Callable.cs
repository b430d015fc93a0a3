namespace RecurFormer.Templates.Values;

/// <summary>Arguments of a call as the template wrote them: positional values, then name=value pairs.</summary>
public sealed class CallArguments(List<object?> positional, List<KeyValuePair<string, object?>> named)
{
    public static readonly CallArguments Empty = new([], []);

    public List<object?> Positional { get; } = positional;

    public List<KeyValuePair<string, object?>> Named { get; } = named;

    public int Count => Positional.Count + Named.Count;
}

/// <summary>Anything a template can call: a global function, a bound method of a value, a macro, <c>caller</c>.</summary>
public abstract class PyCallable
{
    public abstract string Name { get; }

    public abstract object? Invoke(Evaluation.CallSite site, CallArguments arguments);
}

/// <summary>A callable implemented in C#.</summary>
public sealed class BuiltinFunction(string name, Func<Evaluation.CallSite, CallArguments, object?> body) : PyCallable
{
    public override string Name { get; } = name;

    public override object? Invoke(Evaluation.CallSite site, CallArguments arguments) => body(site, arguments);

    public override string ToString() => $"<built-in function {Name}>";
}
