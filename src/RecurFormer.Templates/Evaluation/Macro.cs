using System.Text;
using RecurFormer.Templates.Parsing;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// A macro (or the body of a call block, which its macro calls as <c>caller()</c>): a closure over the scope where it
/// was defined. Missing arguments are undefined, as in Jinja2; extra ones are errors unless the body uses
/// <c>varargs</c>/<c>kwargs</c>. Calls count against <see cref="TemplateOptions.MaxCallDepth"/>.
/// </summary>
public sealed class Macro(MacroDefinition definition, Scope closure, PyCallable? caller) : PyCallable
{
    public override string Name => definition.Name;

    public override string ToString() => $"<Macro '{Name}'>";

    public override object? Invoke(CallSite site, CallArguments arguments)
    {
        var evaluator = site.Evaluator;
        var parameters = definition.Parameters;
        var scope = new Scope(closure);
        var positional = arguments.Positional;
        if (positional.Count > parameters.Count && !definition.UsesVarargs)
        {
            throw site.Fail($"macro '{Name}' takes not more than {parameters.Count} argument(s)");
        }
        var bound = new bool[parameters.Count];
        for (var i = 0; i < Math.Min(positional.Count, parameters.Count); i++)
        {
            scope.Set(parameters[i].Name, positional[i]);
            bound[i] = true;
        }
        var kwargs = new PyDict();
        var callerValue = caller;
        foreach (var (name, value) in arguments.Named)
        {
            var index = IndexOf(name);
            if (index >= 0)
            {
                if (bound[index])
                {
                    throw site.Fail($"macro '{Name}' got multiple values for argument '{name}'");
                }
                scope.Set(name, value);
                bound[index] = true;
            }
            else if (name == "caller" && definition.UsesCaller)
            {
                callerValue = value as PyCallable;
            }
            else if (definition.UsesKwargs)
            {
                kwargs.Set(name, value);
            }
            else
            {
                throw site.Fail($"macro '{Name}' takes no keyword argument '{name}'");
            }
        }
        for (var i = 0; i < parameters.Count; i++)
        {
            if (!bound[i])
            {
                scope.Set(parameters[i].Name, parameters[i].Default is { } fallback
                    ? evaluator.Evaluate(fallback, scope)
                    : Undefined.ForName(parameters[i].Name));
            }
        }
        scope.Set("varargs", new PyTuple(positional.Skip(parameters.Count).ToList()));
        scope.Set("kwargs", kwargs);
        if (callerValue is not null)
        {
            scope.Set("caller", callerValue);
        }
        evaluator.EnterCall(site);
        try
        {
            var output = new StringBuilder();
            evaluator.ExecuteBody(definition.Body, scope, output);
            return output.ToString();
        }
        finally
        {
            evaluator.LeaveCall();
        }
    }

    private int IndexOf(string name)
    {
        for (var i = 0; i < definition.Parameters.Count; i++)
        {
            if (definition.Parameters[i].Name == name)
            {
                return i;
            }
        }
        return -1;
    }
}
