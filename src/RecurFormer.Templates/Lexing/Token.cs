namespace RecurFormer.Templates.Lexing;

public enum TokenKind
{
    /// <summary>Literal template text, already trimmed by the whitespace-control rules.</summary>
    Text,
    VariableBegin,
    VariableEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

/// <summary>One token, with the 1-based line and column where it starts in the template source.</summary>
public readonly record struct Token(TokenKind Kind, string Text, object? Value, int Line, int Column)
{
    public bool Is(TokenKind kind, string text) => Kind == kind && Text == text;

    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;

    public bool IsOperator(string op) => Kind == TokenKind.Operator && Text == op;

    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.VariableEnd => "end of print statement",
        TokenKind.BlockEnd => "end of statement block",
        TokenKind.Text => "template text",
        _ => $"'{Text}'",
    };
}
