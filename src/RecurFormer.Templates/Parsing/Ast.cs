namespace RecurFormer.Templates.Parsing;

// The syntax tree. Nodes are plain data with the position of their first token; the evaluator gives them meaning.

public abstract record Node(int Line, int Column);

// ---- Statements -----------------------------------------------------------------------------------------------

public abstract record Statement(int Line, int Column) : Node(Line, Column);

public sealed record TextStatement(string Text, int Line, int Column) : Statement(Line, Column);

public sealed record OutputStatement(Expression Value, int Line, int Column) : Statement(Line, Column);

public sealed record IfBranch(Expression Condition, IReadOnlyList<Statement> Body);

public sealed record IfStatement(IReadOnlyList<IfBranch> Branches, IReadOnlyList<Statement>? Else, int Line, int Column)
    : Statement(Line, Column);

/// <summary><c>{% for target in iterable [if filter] [recursive] %}</c>; a recursive loop's body may call <c>loop(items)</c>.</summary>
public sealed record ForStatement(
    AssignTarget Target,
    Expression Iterable,
    Expression? Filter,
    IReadOnlyList<Statement> Body,
    IReadOnlyList<Statement>? Else,
    int Line,
    int Column) : Statement(Line, Column)
{
    public bool Recursive { get; init; }
}

public sealed record SetStatement(AssignTarget Target, Expression Value, int Line, int Column) : Statement(Line, Column);

/// <summary><c>{% set x %}…{% endset %}</c>, optionally <c>{% set x | filter %}</c>: captures rendered text.</summary>
public sealed record SetBlockStatement(AssignTarget Target, IReadOnlyList<Statement> Body, IReadOnlyList<FilterExpression> Filters, int Line, int Column)
    : Statement(Line, Column);

public sealed record MacroParameter(string Name, Expression? Default);

public sealed record MacroDefinition(
    string Name,
    IReadOnlyList<MacroParameter> Parameters,
    IReadOnlyList<Statement> Body,
    bool UsesVarargs,
    bool UsesKwargs,
    bool UsesCaller,
    int Line,
    int Column);

public sealed record MacroStatement(MacroDefinition Macro, int Line, int Column) : Statement(Line, Column);

/// <summary><c>{% call(params) macro(args) %}body{% endcall %}</c>: the body becomes the macro's <c>caller()</c>.</summary>
public sealed record CallBlockStatement(CallExpression Call, MacroDefinition Caller, int Line, int Column) : Statement(Line, Column);

public sealed record FilterBlockStatement(IReadOnlyList<FilterExpression> Filters, IReadOnlyList<Statement> Body, int Line, int Column)
    : Statement(Line, Column);

/// <summary>transformers' <c>{% generation %}</c>: marks assistant text for training masks; renders its body as is.</summary>
public sealed record GenerationStatement(IReadOnlyList<Statement> Body, int Line, int Column) : Statement(Line, Column);

public sealed record WithStatement(IReadOnlyList<(AssignTarget Target, Expression Value)> Assignments, IReadOnlyList<Statement> Body, int Line, int Column)
    : Statement(Line, Column);

public sealed record BreakStatement(int Line, int Column) : Statement(Line, Column);

public sealed record ContinueStatement(int Line, int Column) : Statement(Line, Column);

// ---- Assignment targets ----------------------------------------------------------------------------------------

public abstract record AssignTarget(int Line, int Column) : Node(Line, Column);

public sealed record NameTarget(string Name, int Line, int Column) : AssignTarget(Line, Column);

/// <summary><c>ns.attr</c>: only namespace objects accept it.</summary>
public sealed record AttributeTarget(string Owner, string Attribute, int Line, int Column) : AssignTarget(Line, Column);

public sealed record TupleTarget(IReadOnlyList<AssignTarget> Items, int Line, int Column) : AssignTarget(Line, Column);

// ---- Expressions -----------------------------------------------------------------------------------------------

public abstract record Expression(int Line, int Column) : Node(Line, Column);

public sealed record LiteralExpression(object? Value, int Line, int Column) : Expression(Line, Column);

public sealed record NameExpression(string Name, int Line, int Column) : Expression(Line, Column);

public sealed record ListExpression(IReadOnlyList<Expression> Items, int Line, int Column) : Expression(Line, Column);

public sealed record TupleExpression(IReadOnlyList<Expression> Items, int Line, int Column) : Expression(Line, Column);

public sealed record DictExpression(IReadOnlyList<(Expression Key, Expression Value)> Items, int Line, int Column) : Expression(Line, Column);

public sealed record AttributeExpression(Expression Owner, string Attribute, int Line, int Column) : Expression(Line, Column);

public sealed record ItemExpression(Expression Owner, Expression Key, int Line, int Column) : Expression(Line, Column);

public sealed record SliceExpression(Expression Owner, Expression? Start, Expression? Stop, Expression? Step, int Line, int Column)
    : Expression(Line, Column);

/// <summary>How a call argument is passed: by position, by name, or unpacked from a sequence (<c>*args</c>) or a dict (<c>**kwargs</c>).</summary>
public enum ArgumentKind { Positional, Named, Unpacked, UnpackedNamed }

public sealed record Argument(string? Name, Expression Value, ArgumentKind Kind = ArgumentKind.Positional);

public sealed record CallExpression(Expression Callee, IReadOnlyList<Argument> Arguments, int Line, int Column) : Expression(Line, Column);

/// <summary><c>value | name(args)</c>; <see cref="Value"/> is null inside a filter block, whose body is the value.</summary>
public sealed record FilterExpression(Expression? Value, string Name, IReadOnlyList<Argument> Arguments, int Line, int Column)
    : Expression(Line, Column);

public sealed record TestExpression(Expression Value, string Name, IReadOnlyList<Argument> Arguments, bool Negated, int Line, int Column)
    : Expression(Line, Column);

public sealed record UnaryExpression(string Operator, Expression Operand, int Line, int Column) : Expression(Line, Column);

public sealed record BinaryExpression(string Operator, Expression Left, Expression Right, int Line, int Column) : Expression(Line, Column);

/// <summary><c>a and b</c> / <c>a or b</c>: short-circuit, and yields an operand as Python does, not a bool.</summary>
public sealed record LogicalExpression(bool IsAnd, Expression Left, Expression Right, int Line, int Column) : Expression(Line, Column);

/// <summary>A comparison chain <c>a &lt; b &lt;= c</c>, including <c>in</c> and <c>not in</c>.</summary>
public sealed record CompareExpression(Expression First, IReadOnlyList<(string Operator, Expression Operand)> Rest, int Line, int Column)
    : Expression(Line, Column);

public sealed record ConditionalExpression(Expression Condition, Expression Then, Expression? Else, int Line, int Column)
    : Expression(Line, Column);
