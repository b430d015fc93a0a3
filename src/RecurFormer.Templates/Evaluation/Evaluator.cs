using System.Runtime.CompilerServices;
using System.Text;
using RecurFormer.Templates.Parsing;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.Evaluation;

/// <summary>
/// Walks the syntax tree of one render. One instance per render: it holds the step and call-depth counters that
/// keep a runaway template from hanging or overflowing the stack. Python-level failures (<see cref="PyError"/>)
/// become a <see cref="TemplateException"/> at the innermost expression that raised them.
/// </summary>
public sealed class Evaluator(TemplateOptions options)
{
    private long steps;
    private int callDepth;

    public TemplateOptions Options { get; } = options;

    /// <summary>What a statement list asks of the loop around it.</summary>
    public enum Flow
    {
        Normal,
        Break,
        Continue,
    }

    public Flow ExecuteBody(IReadOnlyList<Statement> body, Scope scope, StringBuilder output)
    {
        for (var i = 0; i < body.Count; i++)
        {
            var flow = Execute(body[i], scope, output);
            if (flow != Flow.Normal)
            {
                return flow;
            }
        }
        return Flow.Normal;
    }

    private void Step(Node at)
    {
        if (++steps > Options.MaxSteps)
        {
            throw new TemplateException($"the template ran more than {Options.MaxSteps} steps (is a loop too large?)", at.Line, at.Column);
        }
    }

    public void EnterCall(CallSite site)
    {
        if (++callDepth > Options.MaxCallDepth)
        {
            throw site.Fail($"macro calls nested more than {Options.MaxCallDepth} deep (infinite recursion?)");
        }
        EnsureStack(site.Line, site.Column);
    }

    public void LeaveCall() => callDepth--;

    private static void EnsureStack(int line, int column)
    {
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
        {
            throw new TemplateException("the template nests too deeply to render", line, column);
        }
    }

    private void Append(StringBuilder output, string text, Node at)
    {
        if (output.Length + text.Length > Options.MaxOutputLength)
        {
            throw new TemplateException($"the output grew beyond {Options.MaxOutputLength} characters", at.Line, at.Column);
        }
        output.Append(text);
    }

    private Flow Execute(Statement statement, Scope scope, StringBuilder output)
    {
        Step(statement);
        switch (statement)
        {
            case TextStatement text:
                Append(output, text.Text, text);
                return Flow.Normal;
            case OutputStatement print:
                Append(output, PyOps.Str(Evaluate(print.Value, scope)), print);
                return Flow.Normal;
            case IfStatement conditional:
                foreach (var branch in conditional.Branches)
                {
                    if (PyOps.IsTrue(Evaluate(branch.Condition, scope)))
                    {
                        return ExecuteBody(branch.Body, scope, output);
                    }
                }
                return conditional.Else is null ? Flow.Normal : ExecuteBody(conditional.Else, scope, output);
            case ForStatement loop:
                ExecuteFor(loop, scope, output);
                return Flow.Normal;
            case SetStatement set:
                Assign(set.Target, Evaluate(set.Value, scope), scope);
                return Flow.Normal;
            case SetBlockStatement setBlock:
                Assign(setBlock.Target, Capture(setBlock.Body, setBlock.Filters, scope, setBlock), scope);
                return Flow.Normal;
            case MacroStatement macro:
                scope.Set(macro.Macro.Name, new Macro(macro.Macro, scope, null));
                return Flow.Normal;
            case CallBlockStatement callBlock:
                var caller = new Macro(callBlock.Caller, scope, null);
                Append(output, PyOps.Str(EvaluateCall(callBlock.Call, scope, caller)), callBlock);
                return Flow.Normal;
            case FilterBlockStatement filterBlock:
                Append(output, PyOps.Str(Capture(filterBlock.Body, filterBlock.Filters, scope, filterBlock)), filterBlock);
                return Flow.Normal;
            case GenerationStatement generation:
                return ExecuteBody(generation.Body, scope, output);
            case WithStatement with:
                var inner = new Scope(scope);
                foreach (var (target, value) in with.Assignments)
                {
                    Assign(target, Evaluate(value, scope), inner);
                }
                return ExecuteBody(with.Body, inner, output);
            case BreakStatement:
                return Flow.Break;
            case ContinueStatement:
                return Flow.Continue;
            default:
                throw new TemplateException($"unsupported statement {statement.GetType().Name}", statement.Line, statement.Column);
        }
    }

    /// <summary>Renders a body to a string and passes it through filters: block set and filter blocks.</summary>
    private object? Capture(IReadOnlyList<Statement> body, IReadOnlyList<FilterExpression> filters, Scope scope, Node at)
    {
        var captured = new StringBuilder();
        var flow = ExecuteBody(body, scope, captured);
        if (flow != Flow.Normal)
        {
            throw new TemplateException("break/continue cannot leave a set or filter block", at.Line, at.Column);
        }
        object? value = captured.ToString();
        foreach (var filter in filters)
        {
            value = ApplyFilter(filter, value, scope);
        }
        return value;
    }

    private void ExecuteFor(ForStatement loop, Scope scope, StringBuilder output) =>
        RunLoop(loop, Evaluate(loop.Iterable, scope), scope, output, depth: 1);

    /// <summary>
    /// One pass of a for loop over <paramref name="iterable"/>. A recursive loop's <c>loop(items)</c> runs the same body
    /// over <paramref name="iterable"/>'s children one level deeper and returns what it wrote (Jinja2's recursive loops,
    /// which templates use for nested tool schemas); its depth counts against the macro call limit.
    /// </summary>
    private void RunLoop(ForStatement loop, object? iterable, Scope scope, StringBuilder output, int depth)
    {
        List<object?> items;
        try
        {
            items = [.. PyOps.Iterate(iterable)];
        }
        catch (PyError error)
        {
            throw new TemplateException(error.Message, loop.Iterable.Line, loop.Iterable.Column);
        }
        var loopScope = new Scope(scope);
        if (loop.Filter is not null)
        {
            // The inline filter sees the loop target but not the loop variable, and decides what loop.length counts.
            var kept = new List<object?>(items.Count);
            foreach (var item in items)
            {
                Step(loop);
                Assign(loop.Target, item, loopScope);
                if (PyOps.IsTrue(Evaluate(loop.Filter, loopScope)))
                {
                    kept.Add(item);
                }
            }
            items = kept;
        }
        Func<CallSite, object?, string>? recurse = null;
        if (loop.Recursive)
        {
            recurse = (site, children) =>
            {
                EnterCall(site);
                try
                {
                    var inner = new StringBuilder();
                    RunLoop(loop, children, scope, inner, depth + 1);
                    return inner.ToString();
                }
                finally
                {
                    LeaveCall();
                }
            };
        }
        var context = new LoopContext(items, depth, recurse);
        loopScope.Set("loop", context);
        for (var i = 0; i < items.Count; i++)
        {
            Step(loop);
            context.Index0 = i;
            // Jinja2 forgets what the body set at the end of each iteration: each one gets a fresh scope.
            var iterationScope = new Scope(loopScope);
            Assign(loop.Target, items[i], iterationScope);
            if (ExecuteBody(loop.Body, iterationScope, output) == Flow.Break)
            {
                break;
            }
        }
        if (items.Count == 0 && loop.Else is not null)
        {
            ExecuteBody(loop.Else, scope, output);
        }
    }

    private void Assign(AssignTarget target, object? value, Scope scope)
    {
        switch (target)
        {
            case NameTarget name:
                scope.Set(name.Name, value);
                break;
            case AttributeTarget attribute:
                if (!scope.TryGet(attribute.Owner, out var owner) || owner is not Namespace ns)
                {
                    throw new TemplateException($"cannot assign attribute on non-namespace object '{attribute.Owner}'", attribute.Line, attribute.Column);
                }
                ns.Attributes.Set(attribute.Attribute, value);
                break;
            case TupleTarget tuple:
                List<object?> values;
                try
                {
                    values = [.. PyOps.Iterate(value)];
                }
                catch (PyError error)
                {
                    throw new TemplateException($"cannot unpack: {error.Message}", tuple.Line, tuple.Column);
                }
                if (values.Count != tuple.Items.Count)
                {
                    throw new TemplateException(values.Count > tuple.Items.Count
                        ? $"too many values to unpack (expected {tuple.Items.Count})"
                        : $"not enough values to unpack (expected {tuple.Items.Count}, got {values.Count})", tuple.Line, tuple.Column);
                }
                for (var i = 0; i < values.Count; i++)
                {
                    Assign(tuple.Items[i], values[i], scope);
                }
                break;
        }
    }

    public object? Evaluate(Expression expression, Scope scope)
    {
        try
        {
            return EvaluateCore(expression, scope);
        }
        catch (PyError error)
        {
            throw new TemplateException(error.Message, expression.Line, expression.Column);
        }
        catch (Exception error) when (IsBadArgument(error))
        {
            // A builtin given arguments of the wrong type or range: the template's fault, reported like any other.
            var message = error.InnerException is PyError inner ? inner.Message : $"invalid argument: {error.Message}";
            throw new TemplateException(message, expression.Line, expression.Column, error);
        }
    }

    private static bool IsBadArgument(Exception error) => error is InvalidCastException or ArithmeticException or ArgumentException
        or InvalidOperationException or IndexOutOfRangeException or KeyNotFoundException or FormatException or NullReferenceException;

    private object? EvaluateCore(Expression expression, Scope scope)
    {
        switch (expression)
        {
            case LiteralExpression literal:
                return literal.Value;
            case NameExpression name:
                if (scope.TryGet(name.Name, out var value))
                {
                    return value;
                }
                return Globals.TryGet(name.Name, out var global) ? global : Undefined.ForName(name.Name);
            case AttributeExpression attribute:
                return Access.GetAttribute(Evaluate(attribute.Owner, scope), attribute.Attribute, Site(attribute));
            case ItemExpression item:
                return Access.GetItem(Evaluate(item.Owner, scope), Evaluate(item.Key, scope), Site(item));
            case SliceExpression slice:
                return Access.Slice(
                    Evaluate(slice.Owner, scope),
                    slice.Start is null ? null : Evaluate(slice.Start, scope),
                    slice.Stop is null ? null : Evaluate(slice.Stop, scope),
                    slice.Step is null ? null : Evaluate(slice.Step, scope));
            case CallExpression call:
                return EvaluateCall(call, scope, null);
            case FilterExpression filter:
                return ApplyFilter(filter, Evaluate(filter.Value!, scope), scope);
            case TestExpression test:
                var passed = Tests.Apply(test.Name, Site(test), Evaluate(test.Value, scope), EvaluateArguments(test.Arguments, scope));
                return passed != test.Negated;
            case LogicalExpression logical:
                var left = Evaluate(logical.Left, scope);
                return PyOps.IsTrue(left) == logical.IsAnd ? Evaluate(logical.Right, scope) : left;
            case UnaryExpression unary:
                var operand = Evaluate(unary.Operand, scope);
                return unary.Operator == "not" ? !PyOps.IsTrue(operand) : Operators.Unary(unary.Operator, operand);
            case BinaryExpression binary:
                return Operators.Binary(binary.Operator, Evaluate(binary.Left, scope), Evaluate(binary.Right, scope), Options);
            case CompareExpression compare:
                var current = Evaluate(compare.First, scope);
                foreach (var (op, operandExpression) in compare.Rest)
                {
                    var next = Evaluate(operandExpression, scope);
                    if (!Operators.Compare(op, current, next))
                    {
                        return false;
                    }
                    current = next;
                }
                return true;
            case ConditionalExpression conditional:
                if (PyOps.IsTrue(Evaluate(conditional.Condition, scope)))
                {
                    return Evaluate(conditional.Then, scope);
                }
                return conditional.Else is null ? new Undefined("the conditional expression evaluated to false and has no else") : Evaluate(conditional.Else, scope);
            case ListExpression list:
                var items = new List<object?>(list.Items.Count);
                foreach (var element in list.Items)
                {
                    items.Add(Evaluate(element, scope));
                }
                return items;
            case TupleExpression tuple:
                var tupleItems = new object?[tuple.Items.Count];
                for (var i = 0; i < tupleItems.Length; i++)
                {
                    tupleItems[i] = Evaluate(tuple.Items[i], scope);
                }
                return new PyTuple(tupleItems);
            case DictExpression dict:
                var result = new PyDict();
                foreach (var (key, entry) in dict.Items)
                {
                    var keyValue = Evaluate(key, scope);
                    if (keyValue is List<object?> or PyDict or Undefined)
                    {
                        throw new PyError($"unhashable type: '{PyOps.TypeName(keyValue)}'");
                    }
                    result.Set(keyValue, Evaluate(entry, scope));
                }
                return result;
            default:
                throw new TemplateException($"unsupported expression {expression.GetType().Name}", expression.Line, expression.Column);
        }
    }

    private CallSite Site(Node node) => new(this, node.Line, node.Column);

    private object? ApplyFilter(FilterExpression filter, object? value, Scope scope) =>
        Filters.Apply(filter.Name, Site(filter), value, EvaluateArguments(filter.Arguments, scope));

    private CallArguments EvaluateArguments(IReadOnlyList<Argument> arguments, Scope scope)
    {
        if (arguments.Count == 0)
        {
            return CallArguments.Empty;
        }
        var positional = new List<object?>();
        var named = new List<KeyValuePair<string, object?>>();
        foreach (var argument in arguments)
        {
            var value = Evaluate(argument.Value, scope);
            switch (argument.Kind)
            {
                case ArgumentKind.Positional:
                    positional.Add(value);
                    break;
                case ArgumentKind.Named:
                    named.Add(new(argument.Name!, value));
                    break;
                case ArgumentKind.Unpacked:
                    try
                    {
                        positional.AddRange(PyOps.Iterate(value));
                    }
                    catch (PyError error)
                    {
                        throw new TemplateException($"argument after * must be iterable: {error.Message}", argument.Value.Line, argument.Value.Column);
                    }
                    break;
                case ArgumentKind.UnpackedNamed:
                    if (value is not PyDict dict)
                    {
                        throw new TemplateException($"argument after ** must be a mapping, not {PyOps.TypeName(value)}", argument.Value.Line, argument.Value.Column);
                    }
                    foreach (var (key, item) in dict.Entries)
                    {
                        if (key is not string name)
                        {
                            throw new TemplateException("keywords must be strings", argument.Value.Line, argument.Value.Column);
                        }
                        if (named.Any(n => n.Key == name))
                        {
                            throw new TemplateException($"got multiple values for keyword argument '{name}'", argument.Value.Line, argument.Value.Column);
                        }
                        named.Add(new(name, item));
                    }
                    break;
            }
        }
        return new CallArguments(positional, named);
    }

    private object? EvaluateCall(CallExpression call, Scope scope, PyCallable? caller)
    {
        var callee = Evaluate(call.Callee, scope);
        var arguments = EvaluateArguments(call.Arguments, scope);
        if (caller is not null)
        {
            arguments = new CallArguments(arguments.Positional, [.. arguments.Named, new("caller", caller)]);
        }
        var site = Site(call);
        try
        {
            return callee switch
            {
                PyCallable callable => callable.Invoke(site, arguments),
                Undefined undefined => throw new PyError(undefined.Hint, isUndefined: true),
                _ => throw new PyError($"'{PyOps.TypeName(callee)}' object is not callable"),
            };
        }
        catch (PyError error)
        {
            throw site.Fail(error.Message);
        }
    }
}
