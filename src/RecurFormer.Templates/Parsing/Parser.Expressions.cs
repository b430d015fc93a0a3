using RecurFormer.Templates.Lexing;

namespace RecurFormer.Templates.Parsing;

/// <summary>
/// Expressions, with Jinja2's precedence from loosest to tightest: conditional (<c>a if c else b</c>), <c>or</c>,
/// <c>and</c>, <c>not</c>, comparisons (incl. <c>in</c>), <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary
/// minus, then a primary with its postfixes (<c>.a</c>, <c>[i]</c>, <c>(args)</c>) and its filters and tests, which
/// therefore bind tighter than any operator: <c>messages|length - 1</c> is <c>(messages|length) - 1</c>.
/// </summary>
public sealed partial class Parser
{
    private Expression ParseExpression(bool withCondition = true)
    {
        EnterNesting(Current);
        var result = withCondition ? ParseConditional() : ParseOr();
        LeaveNesting();
        return result;
    }

    /// <summary>An expression, or a tuple written without parentheses (<c>set a, b = 1, 2</c>; <c>for x in a, b</c>).</summary>
    private Expression ParseTupleOrExpression(bool withCondition)
    {
        var start = Current;
        var first = ParseExpression(withCondition);
        if (!Current.IsOperator(","))
        {
            return first;
        }
        var items = new List<Expression> { first };
        while (Current.IsOperator(","))
        {
            Advance();
            if (Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || Current.IsName("if"))
            {
                break;
            }
            items.Add(ParseExpression(withCondition));
        }
        return new TupleExpression(items, start.Line, start.Column);
    }

    private Expression ParseConditional()
    {
        var firstUnknown = unknowns.Count;
        var result = ParseOr();
        while (Current.IsName("if"))
        {
            // Jinja2 compiles a conditional expression in a soft frame, its first operand included.
            for (var i = firstUnknown; i < unknowns.Count; i++)
            {
                unknowns[i] = unknowns[i] with { Soft = true };
            }
            var enclosingSoft = soft;
            soft = true;
            var at = Advance();
            var condition = ParseOr();
            Expression? otherwise = null;
            if (Current.IsName("else"))
            {
                Advance();
                otherwise = ParseConditional();
            }
            soft = enclosingSoft;
            result = new ConditionalExpression(condition, result, otherwise, at.Line, at.Column);
        }
        return result;
    }

    private Expression ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or"))
        {
            var at = Advance();
            left = new LogicalExpression(false, left, ParseAnd(), at.Line, at.Column);
        }
        return left;
    }

    private Expression ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and"))
        {
            var at = Advance();
            left = new LogicalExpression(true, left, ParseNot(), at.Line, at.Column);
        }
        return left;
    }

    private Expression ParseNot()
    {
        if (Current.IsName("not"))
        {
            var at = Advance();
            EnterNesting(at);
            var operand = ParseNot();
            LeaveNesting();
            return new UnaryExpression("not", operand, at.Line, at.Column);
        }
        return ParseCompare();
    }

    private static readonly HashSet<string> ComparisonOperators = ["==", "!=", "<", "<=", ">", ">="];

    private Expression ParseCompare()
    {
        var first = ParseAdditive();
        List<(string, Expression)>? rest = null;
        while (true)
        {
            string op;
            if (Current.Kind == TokenKind.Operator && ComparisonOperators.Contains(Current.Text))
            {
                op = Advance().Text;
            }
            else if (Current.IsName("in"))
            {
                Advance();
                op = "in";
            }
            else if (Current.IsName("not") && Peek().IsName("in"))
            {
                Advance();
                Advance();
                op = "not in";
            }
            else
            {
                break;
            }
            (rest ??= []).Add((op, ParseAdditive()));
        }
        return rest is null ? first : new CompareExpression(first, rest, first.Line, first.Column);
    }

    private Expression ParseAdditive()
    {
        var left = ParseConcat();
        while (Current.IsOperator("+") || Current.IsOperator("-"))
        {
            var op = Advance();
            left = new BinaryExpression(op.Text, left, ParseConcat(), op.Line, op.Column);
        }
        return left;
    }

    private Expression ParseConcat()
    {
        var left = ParseMultiplicative();
        while (Current.IsOperator("~"))
        {
            var op = Advance();
            left = new BinaryExpression("~", left, ParseMultiplicative(), op.Line, op.Column);
        }
        return left;
    }

    private Expression ParseMultiplicative()
    {
        var left = ParsePower();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            var op = Advance();
            left = new BinaryExpression(op.Text, left, ParsePower(), op.Line, op.Column);
        }
        return left;
    }

    private Expression ParsePower()
    {
        var left = ParseUnary(withFilters: true);
        while (Current.IsOperator("**"))
        {
            var op = Advance();
            left = new BinaryExpression("**", left, ParseUnary(withFilters: true), op.Line, op.Column);
        }
        return left;
    }

    private Expression ParseUnary(bool withFilters)
    {
        Expression node;
        if (Current.IsOperator("-") || Current.IsOperator("+"))
        {
            var op = Advance();
            EnterNesting(op);
            node = new UnaryExpression(op.Text, ParseUnary(withFilters: false), op.Line, op.Column);
            LeaveNesting();
        }
        else
        {
            node = ParsePrimary();
        }
        node = ParsePostfix(node);
        return withFilters ? ParseFiltersAndTests(node) : node;
    }

    private Expression ParsePrimary()
    {
        var token = Current;
        switch (token.Kind)
        {
            case TokenKind.Name:
                Advance();
                switch (token.Text)
                {
                    case "true" or "True": return new LiteralExpression(true, token.Line, token.Column);
                    case "false" or "False": return new LiteralExpression(false, token.Line, token.Column);
                    case "none" or "None": return new LiteralExpression(null, token.Line, token.Column);
                }
                NoteName(token.Text);
                return new NameExpression(token.Text, token.Line, token.Column);
            case TokenKind.String:
                Advance();
                var text = (string)token.Value!;
                // Adjacent literals concatenate, as in Python.
                while (Current.Kind == TokenKind.String)
                {
                    text += (string)Advance().Value!;
                }
                return new LiteralExpression(text, token.Line, token.Column);
            case TokenKind.Integer:
            case TokenKind.Float:
                Advance();
                return new LiteralExpression(token.Value, token.Line, token.Column);
            case TokenKind.Operator when token.Text == "(":
                return ParseParenthesized();
            case TokenKind.Operator when token.Text == "[":
                return ParseList();
            case TokenKind.Operator when token.Text == "{":
                return ParseDict();
            default:
                throw Error($"unexpected {token}");
        }
    }

    private Expression ParseParenthesized()
    {
        var open = Advance();
        var items = new List<Expression>();
        var sawComma = false;
        while (!Current.IsOperator(")"))
        {
            if (items.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                sawComma = true;
                if (Current.IsOperator(")"))
                {
                    break;
                }
            }
            items.Add(ParseExpression());
        }
        Advance();
        return items.Count == 1 && !sawComma ? items[0] : new TupleExpression(items, open.Line, open.Column);
    }

    private ListExpression ParseList()
    {
        var open = Advance();
        var items = new List<Expression>();
        while (!Current.IsOperator("]"))
        {
            if (items.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOperator("]"))
                {
                    break;
                }
            }
            items.Add(ParseExpression());
        }
        Advance();
        return new ListExpression(items, open.Line, open.Column);
    }

    private DictExpression ParseDict()
    {
        var open = Advance();
        var items = new List<(Expression, Expression)>();
        while (!Current.IsOperator("}"))
        {
            if (items.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOperator("}"))
                {
                    break;
                }
            }
            var key = ParseExpression();
            Expect(TokenKind.Operator, ":");
            items.Add((key, ParseExpression()));
        }
        Advance();
        return new DictExpression(items, open.Line, open.Column);
    }

    private Expression ParsePostfix(Expression node)
    {
        while (true)
        {
            if (Current.IsOperator(".") || Current.IsOperator("["))
            {
                node = ParseSubscript(node);
            }
            else if (Current.IsOperator("("))
            {
                node = ParseCall(node);
            }
            else
            {
                return node;
            }
        }
    }

    private Expression ParseFiltersAndTests(Expression node)
    {
        while (true)
        {
            if (Current.IsOperator("|"))
            {
                Advance();
                node = ParseFilterCall(node);
            }
            else if (Current.IsName("is"))
            {
                node = ParseTest(node);
            }
            else if (Current.IsOperator("("))
            {
                node = ParseCall(node);
            }
            else
            {
                return node;
            }
        }
    }

    private Expression ParseSubscript(Expression owner)
    {
        var token = Advance();
        if (token.Text == ".")
        {
            var attribute = Current;
            if (attribute.Kind == TokenKind.Name)
            {
                Advance();
                return new AttributeExpression(owner, attribute.Text, attribute.Line, attribute.Column);
            }
            if (attribute.Kind == TokenKind.Integer)
            {
                Advance();
                return new ItemExpression(owner, new LiteralExpression(attribute.Value, attribute.Line, attribute.Column), attribute.Line, attribute.Column);
            }
            throw Error($"expected an attribute name after '.', got {attribute}");
        }
        Expression? start = null, stop = null, step = null;
        var isSlice = false;
        if (Current.IsOperator("]") || (!Current.IsOperator(":") && IsTupleSubscript()))
        {
            // x[] and x[a, b] subscript with a tuple, as in Python (and find nothing in a dict of strings).
            var items = new List<Expression>();
            while (!Current.IsOperator("]"))
            {
                items.Add(ParseExpression());
                if (!Current.IsOperator(","))
                {
                    break;
                }
                Advance();
                if (Current.IsOperator("]"))
                {
                    throw Error("unexpected ']'");
                }
            }
            Expect(TokenKind.Operator, "]");
            return new ItemExpression(owner, new TupleExpression(items, token.Line, token.Column), token.Line, token.Column);
        }
        if (!Current.IsOperator(":"))
        {
            start = ParseExpression();
        }
        if (Current.IsOperator(":"))
        {
            isSlice = true;
            Advance();
            if (!Current.IsOperator("]") && !Current.IsOperator(":"))
            {
                stop = ParseExpression();
            }
            if (Current.IsOperator(":"))
            {
                Advance();
                if (!Current.IsOperator("]"))
                {
                    step = ParseExpression();
                }
            }
        }
        Expect(TokenKind.Operator, "]");
        return isSlice
            ? new SliceExpression(owner, start, stop, step, token.Line, token.Column)
            : new ItemExpression(owner, start!, token.Line, token.Column);
    }

    /// <summary>Looks ahead (without consuming) for a comma at this bracket level before the closing ']'.</summary>
    private bool IsTupleSubscript()
    {
        var level = 0;
        for (var i = index; i < tokens.Count; i++)
        {
            var token = tokens[i];
            if (token.Kind is TokenKind.End or TokenKind.BlockEnd or TokenKind.VariableEnd)
            {
                return false;
            }
            if (token.Kind != TokenKind.Operator)
            {
                continue;
            }
            switch (token.Text)
            {
                case "(" or "[" or "{": level++; break;
                case ")" or "}": level--; break;
                case "]" when level == 0: return false;
                case "]": level--; break;
                case "," when level == 0: return true;
                case ":" when level == 0: return false;
            }
        }
        return false;
    }

    private CallExpression ParseCall(Expression callee)
    {
        var open = Current;
        return new CallExpression(callee, ParseArguments(), open.Line, open.Column);
    }

    private List<Argument> ParseArguments()
    {
        var open = Expect(TokenKind.Operator, "(");
        var arguments = new List<Argument>();
        while (!Current.IsOperator(")"))
        {
            if (arguments.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOperator(")"))
                {
                    break;
                }
            }
            if (Current.IsOperator("**"))
            {
                // f(**kwargs): a dict's items as keyword arguments (last, as in Python and Jinja2).
                Advance();
                arguments.Add(new Argument(null, ParseExpression(), ArgumentKind.UnpackedNamed));
            }
            else if (Current.IsOperator("*"))
            {
                if (arguments.Any(a => a.Kind == ArgumentKind.UnpackedNamed))
                {
                    throw Error("*args cannot follow **kwargs");
                }
                Advance();
                arguments.Add(new Argument(null, ParseExpression(), ArgumentKind.Unpacked));
            }
            else if (Current.Kind == TokenKind.Name && Peek().IsOperator("="))
            {
                if (arguments.Any(a => a.Kind == ArgumentKind.UnpackedNamed))
                {
                    throw Error("a keyword argument cannot follow **kwargs");
                }
                var name = Advance().Text;
                Advance();
                arguments.Add(new Argument(name, ParseExpression(), ArgumentKind.Named));
            }
            else
            {
                if (arguments.Any(a => a.Kind is ArgumentKind.Named or ArgumentKind.UnpackedNamed))
                {
                    throw Error("a positional argument cannot follow a keyword argument");
                }
                arguments.Add(new Argument(null, ParseExpression()));
            }
        }
        Advance();
        return arguments;
    }

    private FilterExpression ParseFilterCall(Expression? value)
    {
        var name = Expect(TokenKind.Name);
        var fullName = name.Text;
        while (Current.IsOperator(".") && Peek().Kind == TokenKind.Name)
        {
            Advance();
            fullName += "." + Advance().Text;
        }
        CheckFilterExists(name with { Text = fullName });
        var arguments = Current.IsOperator("(") ? ParseArguments() : [];
        return new FilterExpression(value, fullName, arguments, name.Line, name.Column);
    }

    private Expression ParseTest(Expression value)
    {
        var isToken = Advance();
        var negated = false;
        if (Current.IsName("not"))
        {
            Advance();
            negated = true;
        }
        var name = Current;
        if (name.Kind != TokenKind.Name)
        {
            throw Error($"expected a test name after 'is', got {name}");
        }
        var testName = name.Text;
        Advance();
        while (Current.IsOperator(".") && Peek().Kind == TokenKind.Name)
        {
            Advance();
            testName += "." + Advance().Text;
        }
        if (name.Kind == TokenKind.Name && testName is "none" or "true" or "false" or "None" or "True" or "False")
        {
            testName = testName.ToLowerInvariant();
        }
        CheckTestExists(name with { Text = testName });
        List<Argument> arguments;
        if (Current.IsOperator("("))
        {
            arguments = ParseArguments();
        }
        else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                  || Current.IsOperator("[") || Current.IsOperator("{"))
                 && !Current.IsName("else") && !Current.IsName("or") && !Current.IsName("and"))
        {
            if (Current.IsName("is"))
            {
                throw Error("you cannot chain multiple tests with 'is'");
            }
            arguments = [new Argument(null, ParsePostfix(ParsePrimary()))];
        }
        else
        {
            arguments = [];
        }
        return new TestExpression(value, testName, arguments, negated, isToken.Line, isToken.Column);
    }
}
