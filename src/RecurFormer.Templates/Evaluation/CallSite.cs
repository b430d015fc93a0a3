using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>Where a filter, test, method or function is being called from: for error positions and for the limits.</summary>
public readonly record struct CallSite(Evaluator Evaluator, int Line, int Column)
{
    public TemplateException Fail(string message) => new(message, Line, Column);

    public TemplateOptions Options => Evaluator.Options;
}

/// <summary>
/// Binds call arguments to a Python-style signature (positional or by name, with defaults), reporting wrong counts
/// and unknown names the way Python does: <c>indent() got an unexpected keyword argument 'x'</c>.
/// </summary>
public sealed class BoundArguments
{
    private readonly object?[] values;
    private readonly bool[] given;

    private BoundArguments(object?[] values, bool[] given)
    {
        this.values = values;
        this.given = given;
    }

    /// <param name="leading">Values already bound before the call's own arguments (the filtered value).</param>
    public static BoundArguments Bind(string function, string[] parameters, CallArguments arguments, int leading = 0)
    {
        var values = new object?[parameters.Length];
        var given = new bool[parameters.Length];
        var available = parameters.Length - leading;
        if (arguments.Positional.Count > available)
        {
            throw new PyError($"{function}() takes at most {available} argument(s) ({arguments.Positional.Count} given)");
        }
        for (var i = 0; i < arguments.Positional.Count; i++)
        {
            values[leading + i] = arguments.Positional[i];
            given[leading + i] = true;
        }
        foreach (var (name, value) in arguments.Named)
        {
            var position = Array.IndexOf(parameters, name);
            if (position < leading)
            {
                throw new PyError($"{function}() got an unexpected keyword argument '{name}'");
            }
            if (given[position])
            {
                throw new PyError($"{function}() got multiple values for argument '{name}'");
            }
            values[position] = value;
            given[position] = true;
        }
        return new BoundArguments(values, given);
    }

    public bool Has(int index) => given[index];

    public object? Get(int index, object? fallback = null) => given[index] ? values[index] : fallback;

    public object? Required(int index, string function, string name) =>
        given[index] ? values[index] : throw new PyError($"{function}() missing required argument '{name}'");
}
