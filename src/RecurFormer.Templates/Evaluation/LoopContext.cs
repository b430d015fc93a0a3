using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// The <c>loop</c> variable of a for loop: index, first/last, length, neighbours, depth, <c>cycle()</c>,
/// <c>changed()</c>, and in a recursive loop <c>loop(children)</c>.
/// </summary>
public sealed class LoopContext(IReadOnlyList<object?> items, int depth = 1, Func<CallSite, object?, string>? recurse = null) : PyCallable
{
    public override string Name => "loop";

    /// <summary><c>loop(items)</c>: the loop's body over <paramref name="arguments"/>' one iterable, a level deeper.</summary>
    public override object? Invoke(CallSite site, CallArguments arguments)
    {
        if (recurse is null)
        {
            throw new PyError("the loop is not recursive: write {% for ... recursive %} to call loop()");
        }
        if (arguments.Positional.Count != 1 || arguments.Named.Count != 0)
        {
            throw new PyError($"loop() takes exactly one iterable ({arguments.Count} given)");
        }
        return recurse(site, arguments.Positional[0]);
    }

    public override string ToString() => $"<LoopContext {Index0 + 1}/{items.Count}>";

    private object? lastChanged = Undefined.Instance;
    private bool changedCalled;

    public int Index0 { get; set; }

    public object? GetAttribute(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex" => (long)(items.Count - Index0),
        "revindex0" => (long)(items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == items.Count - 1,
        "length" => (long)items.Count,
        "depth" => (long)depth,
        "depth0" => (long)depth - 1,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : Undefined.ForAttribute(this, "previtem"),
        "nextitem" => Index0 + 1 < items.Count ? items[Index0 + 1] : Undefined.ForAttribute(this, "nextitem"),
        "cycle" => new BuiltinFunction("cycle", (site, args) =>
        {
            if (args.Positional.Count == 0)
            {
                throw new PyError("no items for cycling given");
            }
            return args.Positional[Index0 % args.Positional.Count];
        }),
        "changed" => new BuiltinFunction("changed", (site, args) =>
        {
            var value = args.Positional.Count == 1 ? args.Positional[0] : new PyTuple(args.Positional.ToList());
            var changed = !changedCalled || !PyOps.PyEquals(value, lastChanged);
            changedCalled = true;
            lastChanged = value;
            return changed;
        }),
        _ => Undefined.ForAttribute(this, name),
    };

}
