using RecurFormer.Templates.Evaluation;
using RecurFormer.Templates.Lexing;

namespace RecurFormer.Templates.Parsing;

/// <summary>
/// Recursive-descent parser from tokens to the syntax tree: the statement tags here, expressions in
/// <c>Parser.Expressions.cs</c>. Unknown tags, filters and tests and unclosed blocks are reported here, at parse time,
/// with the position of the offending tag, as Jinja2 reports them when it compiles a template.
/// </summary>
public sealed partial class Parser
{
    private readonly List<Token> tokens;
    private readonly int maxDepth;
    private int index;
    private int depth;
    // For loops enclosing the tag being parsed (a macro body starts afresh): break/continue need one.
    private int loopDepth;
    // Whether the tokens being parsed are in a Jinja2 "soft" frame (see NoteUnknown).
    private bool soft;
    private readonly List<(Token Name, string Kind, bool Soft)> unknowns = [];
    // Macros being parsed, innermost last: records whether their bodies mention varargs, kwargs or caller.
    private readonly Stack<MacroUsage> macroUsages = new();

    private sealed class MacroUsage
    {
        public bool Varargs;
        public bool Kwargs;
        public bool Caller;
    }

    private Parser(List<Token> tokens, int maxDepth)
    {
        this.tokens = tokens;
        this.maxDepth = maxDepth;
    }

    public static IReadOnlyList<Statement> Parse(string source, int maxDepth)
    {
        var parser = new Parser(Lexer.Tokenize(source), maxDepth);
        var body = parser.ParseStatements(out var stopTag, []);
        if (stopTag is not null)
        {
            throw Error($"encountered unknown tag '{stopTag.Value.Text}'", stopTag.Value);
        }
        parser.ThrowForHardUnknowns();
        return body;
    }

    private Token Current => tokens[index];

    private Token Peek(int offset = 1) => tokens[Math.Min(index + offset, tokens.Count - 1)];

    private Token Advance() => tokens[index++];

    private static TemplateException Error(string message, Token at) => new(message, at.Line, at.Column);

    private TemplateException Error(string message) => Error(message, Current);

    private Token Expect(TokenKind kind, string? text = null)
    {
        var token = Current;
        if (token.Kind != kind || (text is not null && token.Text != text))
        {
            var wanted = text is not null ? $"'{text}'" : kind switch
            {
                TokenKind.Name => "a name",
                TokenKind.BlockEnd => "end of statement block ('%}')",
                TokenKind.VariableEnd => "end of print statement ('}}')",
                _ => kind.ToString(),
            };
            throw Error($"expected {wanted}, got {token}");
        }
        index++;
        return token;
    }

    private void EnterNesting(Token at)
    {
        if (++depth > maxDepth)
        {
            throw Error($"template nests blocks or expressions more than {maxDepth} levels deep", at);
        }
    }

    private void LeaveNesting() => depth--;

    /// <summary>
    /// Parses statements until a block tag whose name is in <paramref name="stopNames"/> (consumed up to its name, so the caller
    /// parses what follows the name, and returned in <paramref name="stopTag"/>) or the end of the template (stopTag null).
    /// </summary>
    private List<Statement> ParseStatements(out Token? stopTag, string[] stopNames)
    {
        var body = new List<Statement>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.End:
                    stopTag = null;
                    return body;
                case TokenKind.Text:
                    Advance();
                    body.Add(new TextStatement(token.Text, token.Line, token.Column));
                    break;
                case TokenKind.VariableBegin:
                    Advance();
                    // {{ a, b }} prints a tuple, as in Jinja2.
                    var value = ParseTupleOrExpression(withCondition: true);
                    Expect(TokenKind.VariableEnd);
                    body.Add(new OutputStatement(value, token.Line, token.Column));
                    break;
                case TokenKind.BlockBegin:
                    var name = Peek();
                    if (name.Kind != TokenKind.Name)
                    {
                        throw Error("expected a tag name after '{%'", name);
                    }
                    if (Array.IndexOf(stopNames, name.Text) >= 0)
                    {
                        index += 2;
                        stopTag = name;
                        return body;
                    }
                    Advance();
                    body.Add(ParseTag(token));
                    break;
                default:
                    throw Error($"unexpected {token}");
            }
        }
    }

    /// <summary>The end of a tag that opens a body; Jinja2 accepts a Python-style colon before it.</summary>
    private void ExpectBodyStart()
    {
        if (Current.IsOperator(":"))
        {
            Advance();
        }
        Expect(TokenKind.BlockEnd);
    }

    /// <summary>Parses a block up to one of its closing tags; an unclosed block is reported at its opening tag.</summary>
    private List<Statement> ParseBody(Token opening, string blockName, string[] stopNames, out Token stop)
    {
        EnterNesting(opening);
        var body = ParseStatements(out var stopTag, stopNames);
        LeaveNesting();
        if (stopTag is null)
        {
            var expected = string.Join(" or ", stopNames.Select(n => $"'{n}'"));
            throw Error($"unexpected end of template: the '{blockName}' block opened here is never closed (looking for {expected})", opening);
        }
        stop = stopTag.Value;
        return body;
    }

    private Statement ParseTag(Token begin)
    {
        var name = Advance();
        switch (name.Text)
        {
            case "if":
                return ParseIf(name);
            case "for":
                return ParseFor(name);
            case "set":
                return ParseSet(name);
            case "macro":
                return ParseMacro(name);
            case "call":
                return ParseCallBlock(name);
            case "filter":
                return ParseFilterBlock(name);
            case "generation":
                ExpectBodyStart();
                var generationBody = ParseBody(name, "generation", ["endgeneration"], out _);
                Expect(TokenKind.BlockEnd);
                return new GenerationStatement(generationBody, name.Line, name.Column);
            case "with":
                return ParseWith(name);
            case "break":
            case "continue":
                if (loopDepth == 0)
                {
                    throw Error($"'{name.Text}' outside of a for loop", name);
                }
                Expect(TokenKind.BlockEnd);
                return name.Text == "break" ? new BreakStatement(name.Line, name.Column) : new ContinueStatement(name.Line, name.Column);
            case "include" or "import" or "from" or "extends" or "block":
                throw Error($"the '{name.Text}' tag needs other template files, which chat templates cannot use", name);
            case "do":
                throw Error("encountered unknown tag 'do' (the 'do' extension is not enabled for chat templates)", name);
            default:
                throw Error($"encountered unknown tag '{name.Text}'", name);
        }
    }

    private IfStatement ParseIf(Token opening)
    {
        var branches = new List<IfBranch>();
        IReadOnlyList<Statement>? elseBody = null;
        // Jinja2 compiles if blocks in a "soft" frame: an unknown filter or test in them fails only when executed.
        var enclosingSoft = soft;
        soft = true;
        // The condition is a tuple or expression without its own "if ... else" (as Jinja2 parses it).
        var condition = ParseTupleOrExpression(withCondition: false);
        ExpectBodyStart();
        while (true)
        {
            var body = ParseBody(opening, "if", ["elif", "else", "endif"], out var stop);
            branches.Add(new IfBranch(condition, body));
            if (stop.Text == "elif")
            {
                condition = ParseTupleOrExpression(withCondition: false);
                ExpectBodyStart();
                continue;
            }
            if (stop.Text == "else")
            {
                ExpectBodyStart();
                elseBody = ParseBody(opening, "if", ["endif"], out _);
            }
            Expect(TokenKind.BlockEnd);
            soft = enclosingSoft;
            return new IfStatement(branches, elseBody, opening.Line, opening.Column);
        }
    }

    private ForStatement ParseFor(Token opening)
    {
        var target = ParseAssignTarget(allowAttribute: false);
        if (!Current.IsName("in"))
        {
            throw Error($"expected 'in' in the for loop, got {Current}");
        }
        Advance();
        // No conditional expression here: a trailing "if" filters the loop instead.
        var iterable = ParseTupleOrExpression(withCondition: false);
        Expression? filter = null;
        if (Current.IsName("if"))
        {
            Advance();
            filter = Hard(() => ParseExpression());
        }
        var recursive = false;
        if (Current.IsName("recursive"))
        {
            Advance();
            recursive = true;
        }
        ExpectBodyStart();
        loopDepth++;
        Token stop = default;
        var body = Hard(() => ParseBody(opening, "for", ["endfor", "else"], out stop));
        loopDepth--;
        IReadOnlyList<Statement>? elseBody = null;
        if (stop.Text == "else")
        {
            ExpectBodyStart();
            elseBody = Hard(() => ParseBody(opening, "for", ["endfor"], out _));
        }
        Expect(TokenKind.BlockEnd);
        return new ForStatement(target, iterable, filter, body, elseBody, opening.Line, opening.Column) { Recursive = recursive };
    }

    private Statement ParseSet(Token opening)
    {
        var target = ParseAssignTarget(allowAttribute: true);
        if (Current.IsOperator("="))
        {
            Advance();
            var value = ParseTupleOrExpression(withCondition: true);
            Expect(TokenKind.BlockEnd);
            return new SetStatement(target, value, opening.Line, opening.Column);
        }
        var filters = new List<FilterExpression>();
        while (Current.IsOperator("|"))
        {
            Advance();
            filters.Add(ParseFilterCall(null));
        }
        ExpectBodyStart();
        var body = Hard(() => ParseBody(opening, "set", ["endset"], out _));
        Expect(TokenKind.BlockEnd);
        return new SetBlockStatement(target, body, filters, opening.Line, opening.Column);
    }

    private AssignTarget ParseAssignTarget(bool allowAttribute)
    {
        var first = ParseSingleTarget(allowAttribute);
        if (!Current.IsOperator(",") || first is AttributeTarget)
        {
            // A namespace attribute is assigned alone, never as part of a tuple (as in Jinja2).
            return first;
        }
        var items = new List<AssignTarget> { first };
        while (Current.IsOperator(","))
        {
            Advance();
            if (Current.Kind != TokenKind.Name)
            {
                break;
            }
            items.Add(ParseSingleTarget(allowAttribute: false));
        }
        return new TupleTarget(items, first.Line, first.Column);
    }

    private AssignTarget ParseSingleTarget(bool allowAttribute)
    {
        if (Current.IsOperator("("))
        {
            var open = Advance();
            var inner = ParseAssignTarget(allowAttribute: false);
            Expect(TokenKind.Operator, ")");
            return inner is TupleTarget ? inner : new TupleTarget([inner], open.Line, open.Column);
        }
        var name = Expect(TokenKind.Name);
        if (allowAttribute && Current.IsOperator("."))
        {
            Advance();
            var attribute = Expect(TokenKind.Name);
            return new AttributeTarget(name.Text, attribute.Text, name.Line, name.Column);
        }
        if (name.Text is "true" or "false" or "none" or "True" or "False" or "None")
        {
            throw Error($"cannot assign to '{name.Text}'", name);
        }
        return new NameTarget(name.Text, name.Line, name.Column);
    }

    private MacroStatement ParseMacro(Token opening)
    {
        var name = Expect(TokenKind.Name);
        if (!Current.IsOperator("("))
        {
            throw Error($"expected '(' after the macro name, got {Current}");
        }
        var parameters = ParseMacroParameters();
        ExpectBodyStart();
        var definition = ParseMacroBody(opening, name.Text, parameters, "macro", "endmacro");
        return new MacroStatement(definition, opening.Line, opening.Column);
    }

    private MacroDefinition ParseMacroBody(Token opening, string name, List<MacroParameter> parameters, string blockName, string endName)
    {
        var usage = new MacroUsage();
        macroUsages.Push(usage);
        var enclosingLoops = loopDepth;
        loopDepth = 0;
        var body = Hard(() => ParseBody(opening, blockName, [endName], out _));
        loopDepth = enclosingLoops;
        macroUsages.Pop();
        Expect(TokenKind.BlockEnd);
        return new MacroDefinition(name, parameters, body, usage.Varargs, usage.Kwargs, usage.Caller, opening.Line, opening.Column);
    }

    private List<MacroParameter> ParseMacroParameters()
    {
        var parameters = new List<MacroParameter>();
        if (!Current.IsOperator("("))
        {
            return parameters;
        }
        Advance();
        while (!Current.IsOperator(")"))
        {
            if (parameters.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOperator(")"))
                {
                    break;
                }
            }
            var parameter = Expect(TokenKind.Name);
            Expression? defaultValue = null;
            if (Current.IsOperator("="))
            {
                Advance();
                defaultValue = ParseExpression();
            }
            else if (parameters.Count > 0 && parameters[^1].Default is not null)
            {
                throw Error("a parameter without a default cannot follow one with a default", parameter);
            }
            parameters.Add(new MacroParameter(parameter.Text, defaultValue));
        }
        Advance();
        return parameters;
    }

    private CallBlockStatement ParseCallBlock(Token opening)
    {
        var parameters = ParseMacroParameters();
        var call = ParseExpression();
        if (call is not CallExpression callExpression)
        {
            throw Error("expected a call after 'call'", opening);
        }
        ExpectBodyStart();
        var caller = ParseMacroBody(opening, "caller", parameters, "call", "endcall");
        return new CallBlockStatement(callExpression, caller, opening.Line, opening.Column);
    }

    private FilterBlockStatement ParseFilterBlock(Token opening)
    {
        var filters = new List<FilterExpression> { ParseFilterCall(null) };
        while (Current.IsOperator("|"))
        {
            Advance();
            filters.Add(ParseFilterCall(null));
        }
        ExpectBodyStart();
        var body = Hard(() => ParseBody(opening, "filter", ["endfilter"], out _));
        Expect(TokenKind.BlockEnd);
        return new FilterBlockStatement(filters, body, opening.Line, opening.Column);
    }

    private WithStatement ParseWith(Token opening)
    {
        var assignments = new List<(AssignTarget, Expression)>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
            }
            var target = ParseAssignTarget(allowAttribute: false);
            Expect(TokenKind.Operator, "=");
            assignments.Add((target, ParseExpression()));
        }
        Advance();
        var body = Hard(() => ParseBody(opening, "with", ["endwith"], out _));
        Expect(TokenKind.BlockEnd);
        return new WithStatement(assignments, body, opening.Line, opening.Column);
    }

    /// <summary>
    /// Parses a body the way Jinja2 compiles it in an inner frame (for, macro, call, filter, with, set blocks): not
    /// soft, so unknown filters and tests in it are compile-time errors again.
    /// </summary>
    private T Hard<T>(Func<T> parse)
    {
        var enclosingSoft = soft;
        soft = false;
        try
        {
            return parse();
        }
        finally
        {
            soft = enclosingSoft;
        }
    }

    private void NoteName(string name)
    {
        if (macroUsages.Count == 0)
        {
            return;
        }
        var usage = macroUsages.Peek();
        switch (name)
        {
            case "varargs": usage.Varargs = true; break;
            case "kwargs": usage.Kwargs = true; break;
            case "caller": usage.Caller = true; break;
        }
    }

    /// <summary>
    /// An unknown filter or test is a compile-time error in Jinja2 except in a soft frame (an if block or a conditional
    /// expression), where it fails only if executed. Unknown names are collected with their softness and judged once
    /// the template is parsed, because a conditional expression turns out to be one only after its first operand.
    /// </summary>
    private void NoteUnknown(Token name, bool exists, string kind)
    {
        if (!exists)
        {
            unknowns.Add((name, kind, soft));
        }
    }

    private void CheckFilterExists(Token name) => NoteUnknown(name, Filters.Exists(name.Text), "filter");

    private void CheckTestExists(Token name) => NoteUnknown(name, Tests.Exists(name.Text), "test");

    private void ThrowForHardUnknowns()
    {
        foreach (var (name, kind, isSoft) in unknowns)
        {
            if (!isSoft)
            {
                throw Error($"no {kind} named '{name.Text}'", name);
            }
        }
    }
}
