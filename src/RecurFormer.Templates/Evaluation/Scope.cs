namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// Variables visible at one point of a render. Jinja2 scoping: a for loop, a macro call and a with block get their own
/// scope, so <c>{% set %}</c> inside them does not leak out (hence <c>namespace()</c> in templates); if blocks do not.
/// </summary>
public sealed class Scope(Scope? parent)
{
    private Dictionary<string, object?>? variables;

    public Scope? Parent { get; } = parent;

    public bool TryGet(string name, out object? value)
    {
        for (var scope = this; scope is not null; scope = scope.Parent)
        {
            if (scope.variables is not null && scope.variables.TryGetValue(name, out value))
            {
                return true;
            }
        }
        value = null;
        return false;
    }

    public void Set(string name, object? value) => (variables ??= new Dictionary<string, object?>(StringComparer.Ordinal))[name] = value;
}
