namespace RecurFormer.Templates.Values;

/// <summary>
/// markupsafe's Markup: text marked safe by <c>|safe</c> or produced by <c>|escape</c>. It matters even without
/// autoescape because <c>Markup + str</c> HTML-escapes the plain operand (a real template, functionary v3.1, relies on
/// it). Everywhere else it behaves as its text.
/// </summary>
public sealed class Markup(string text)
{
    public string Text { get; } = text;

    public override string ToString() => Text;

    /// <summary>markupsafe.escape: &amp; &lt; &gt; ' " become entities; Markup passes through unchanged.</summary>
    public static string Escape(object? value) => value is Markup markup
        ? markup.Text
        : PyOps.Str(value)
            .Replace("&", "&amp;", StringComparison.Ordinal)
            .Replace(">", "&gt;", StringComparison.Ordinal)
            .Replace("<", "&lt;", StringComparison.Ordinal)
            .Replace("'", "&#39;", StringComparison.Ordinal)
            .Replace("\"", "&#34;", StringComparison.Ordinal);

    /// <summary>A template value that is text, Markup or not, as a string; null otherwise.</summary>
    public static string? TextOf(object? value) => value switch
    {
        string s => s,
        Markup m => m.Text,
        _ => null,
    };
}
