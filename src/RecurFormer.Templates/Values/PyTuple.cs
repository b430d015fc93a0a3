namespace RecurFormer.Templates.Values;

/// <summary>An immutable sequence, printed as Python prints tuples: <c>(1, 2)</c>, <c>(1,)</c>.</summary>
public sealed class PyTuple(IReadOnlyList<object?> items)
{
    public IReadOnlyList<object?> Items { get; } = items;
}
