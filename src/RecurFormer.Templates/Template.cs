using System.Text;
using System.Text.Json;
using RecurFormer.Templates.Evaluation;
using RecurFormer.Templates.Parsing;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates;

/// <summary>
/// A parsed Jinja2 template, configured as transformers configures chat templates. Parse once, render many times:
/// a parsed template is immutable and can be rendered from several threads at once.
/// </summary>
public sealed class Template
{
    private readonly IReadOnlyList<Statement> body;

    private Template(IReadOnlyList<Statement> body, TemplateOptions options, string source)
    {
        this.body = body;
        Options = options;
        Source = source;
    }

    public TemplateOptions Options { get; }

    /// <summary>The template text (what it teaches the model, e.g. which tool-call format, can be read from it).</summary>
    public string Source { get; }

    /// <exception cref="TemplateException">The source is not a valid template (with the line and column).</exception>
    public static Template Parse(string source, TemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        options ??= TemplateOptions.Default;
        return new Template(Parser.Parse(source, options.MaxNestingDepth), options, source);
    }

    /// <summary>Renders with the given variables (values as <see cref="PyValue.From"/> accepts them).</summary>
    /// <exception cref="TemplateRaisedException">The template called raise_exception.</exception>
    /// <exception cref="TemplateException">Any other failure, with the line and column.</exception>
    public string Render(IEnumerable<KeyValuePair<string, object?>> variables)
    {
        var scope = new Scope(null);
        foreach (var (name, value) in variables)
        {
            scope.Set(name, PyValue.From(value));
        }
        var output = new StringBuilder();
        var evaluator = new Evaluator(Options);
        try
        {
            if (evaluator.ExecuteBody(body, new Scope(scope), output) != Evaluator.Flow.Normal)
            {
                throw new TemplateException("'break' or 'continue' outside of a loop", 0, 0);
            }
        }
        catch (PyError error)
        {
            throw new TemplateException(error.Message, 0, 0);
        }
        return output.ToString();
    }

    /// <summary>Renders with the members of a JSON object as variables.</summary>
    public string Render(JsonElement context)
    {
        if (context.ValueKind != JsonValueKind.Object)
        {
            throw new ArgumentException("the template context must be a JSON object", nameof(context));
        }
        return Render(context.EnumerateObject().Select(p => new KeyValuePair<string, object?>(p.Name, PyJson.FromJson(p.Value))));
    }
}
