namespace RecurFormer.Templates;

/// <summary>
/// Limits and environment of a template. The limits turn runaway templates (infinite macro recursion, loops over
/// millions of items, absurd nesting) into a <see cref="TemplateException"/> instead of a hang or a stack overflow;
/// the defaults are far above what any real chat template needs.
/// </summary>
public sealed record TemplateOptions
{
    public static readonly TemplateOptions Default = new();

    /// <summary>Nesting of blocks and expressions the parser accepts.</summary>
    public int MaxNestingDepth { get; init; } = 100;

    /// <summary>Macro calls active at once (recursion depth).</summary>
    public int MaxCallDepth { get; init; } = 100;

    /// <summary>Statements executed and loop iterations, all together, in one render.</summary>
    public long MaxSteps { get; init; } = 2_000_000;

    /// <summary>Characters of rendered output, and of any one string a template builds.</summary>
    public int MaxOutputLength { get; init; } = 64 * 1024 * 1024;

    /// <summary>
    /// transformers renders in Jinja2's ImmutableSandboxedEnvironment, where <c>list.append</c>, <c>dict.update</c>
    /// and the like are refused; keep false to reject exactly the templates transformers rejects.
    /// </summary>
    public bool AllowMutatingMethods { get; init; }

    /// <summary>The clock behind <c>strftime_now</c> (local time in transformers); tests pin it.</summary>
    public Func<DateTime> Now { get; init; } = () => DateTime.Now;
}
