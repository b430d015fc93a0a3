namespace RecurFormer.Templates.Values;

/// <summary>
/// What <c>namespace(...)</c> returns: the one object a template may assign attributes to
/// (<c>{% set ns.found = true %}</c>), which is how templates carry state out of a for loop's scope.
/// </summary>
public sealed class Namespace
{
    public PyDict Attributes { get; } = new();
}
