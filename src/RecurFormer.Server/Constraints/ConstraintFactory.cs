using RecurFormer.Engine.Sampling;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Tools;
using RecurFormer.StructuredOutput;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.Server.Constraints;

/// <summary>
/// The engine-side constraint of a request, if any: tool calls (in the model's format, with each function's schema)
/// when tools may be called, else the requested output format. Grammars are compiled once per distinct request
/// shape and shared (<see cref="GrammarCache"/>); each choice gets its own <see cref="GrammarConstraint"/>, made on
/// the engine thread, with the request's token budget.
/// </summary>
public static class ConstraintFactory
{
    public static Func<ITokenConstraint>? For(LoadedModel model, int maxTokens, ToolRequest? tools, OutputFormat? format)
    {
        GrammarMatcher matcher;
        if (tools is { Choice: not ToolChoiceMode.None } calls)
        {
            var key = $"tools:{model.ToolFormat.Name}:{calls.Choice}:{calls.NamedFunction}:{calls.ParallelToolCalls}:{calls.ToolsJson.GetRawText()}\n{format?.Key}";
            matcher = Compile(model, key, () => ToolCallGrammar.Build(model.ToolFormat, calls, model.Grammars.Vocabulary, format?.Build()), format?.Param ?? "tools");
        }
        else if (format is not null)
        {
            matcher = Compile(model, format.Key, format.Build, format.Param);
        }
        else
        {
            return null;
        }
        return () => new GrammarConstraint(matcher, maxTokens);
    }

    private static GrammarMatcher Compile(LoadedModel model, string key, Func<GrammarDefinition> build, string param)
    {
        try
        {
            return model.Grammars.GetOrCompile(key, build);
        }
        catch (StructuredOutputException error)
        {
            throw OutputFormat.Refusal(error, error.Message.StartsWith("tools[", StringComparison.Ordinal) ? "tools" : param);
        }
    }
}
