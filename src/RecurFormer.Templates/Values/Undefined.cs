namespace RecurFormer.Templates.Values;

/// <summary>
/// Jinja2's default Undefined: what a missing variable, key or attribute evaluates to. It prints as nothing, is false,
/// iterates as empty and equals only another Undefined, but any arithmetic, call, attribute or item access on it fails
/// with a message naming what was missing (the <see cref="Hint"/>), as Jinja2 does.
/// </summary>
public sealed class Undefined
{
    public static readonly Undefined Instance = new("value is undefined");

    public Undefined(string hint) => Hint = hint;

    /// <summary>Jinja2's wording: <c>'x' is undefined</c> or <c>'dict object' has no attribute 'y'</c>.</summary>
    public string Hint { get; }

    public static Undefined ForName(string name) => new($"'{name}' is undefined");

    public static Undefined ForAttribute(object? owner, string attribute) =>
        new($"{PyOps.DescribeForUndefined(owner)} has no attribute '{attribute}'");

    public static Undefined ForItem(object? owner, object? key) =>
        new($"{PyOps.DescribeForUndefined(owner)} has no element {PyOps.Repr(key)}");

    public override string ToString() => "";
}
