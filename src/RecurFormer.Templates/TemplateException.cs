namespace RecurFormer.Templates;

/// <summary>
/// A template that cannot be parsed or rendered. Carries the 1-based line and column of the construct at fault so
/// that a user can find it in a template of several hundred lines; the message already includes them.
/// </summary>
public class TemplateException : Exception
{
    public TemplateException(string reason, int line, int column, Exception? inner = null)
        : base(line > 0 ? $"line {line}, column {column}: {reason}" : reason, inner)
    {
        Reason = reason;
        Line = line;
        Column = column;
    }

    /// <summary>What is wrong, without the position.</summary>
    public string Reason { get; }

    public int Line { get; }

    public int Column { get; }
}

/// <summary>
/// The template itself called <c>raise_exception(message)</c>: the template's author rejects this input (for example
/// roles that do not alternate). Kept apart from <see cref="TemplateException"/> because it is the caller's input,
/// not the template, that is wrong; <see cref="TemplateException.Reason"/> is exactly the template's message.
/// </summary>
public sealed class TemplateRaisedException(string message, int line, int column)
    : TemplateException(message, line, column);
