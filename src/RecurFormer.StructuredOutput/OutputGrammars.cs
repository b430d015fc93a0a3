using System.Text.Json;
using RecurFormer.StructuredOutput.Ebnf;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Json;
using RecurFormer.StructuredOutput.Regex;

namespace RecurFormer.StructuredOutput;

/// <summary>The grammars of the structured-output requests (OpenAI's response_format, vLLM's guided_*).</summary>
public static class OutputGrammars
{
    /// <summary>A JSON value that validates against <paramref name="schema"/>.</summary>
    public static GrammarDefinition JsonSchema(JsonElement schema) => JsonSchemaCompiler.Compile(schema);

    /// <summary>Any JSON object.</summary>
    public static GrammarDefinition JsonObject() => JsonSchemaCompiler.AnyObject();

    /// <summary>Text that matches <paramref name="pattern"/> as a whole.</summary>
    public static GrammarDefinition Regex(string pattern) => GrammarDefinition.Single(RegexCompiler.FullMatch(pattern));

    /// <summary>Exactly one of <paramref name="choices"/>.</summary>
    public static GrammarDefinition Choice(IEnumerable<string> choices)
    {
        var options = choices.Distinct(StringComparer.Ordinal).Select(Node.Literal).ToArray();
        if (options.Length == 0)
        {
            throw new StructuredOutputException("the list of choices is empty");
        }
        return GrammarDefinition.Single(Node.Alt(options));
    }

    /// <summary>A GBNF grammar starting at <c>root</c>.</summary>
    public static GrammarDefinition Gbnf(string grammar) => GbnfCompiler.Compile(grammar);
}
