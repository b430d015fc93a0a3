using System.Text.Json;
using Json.Schema;
using RecurFormer.Server.Tools;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Matching;
using RecurFormer.TestSupport;
using RecurFormer.Tokenization;

namespace RecurFormer.Server.Tests;

/// <summary>
/// Tool calls read from model output in each family's format, whole and streamed in pieces of any size (the two
/// must agree), and the grammar that forces calls: whatever a model samples under it parses into calls whose
/// arguments validate against the function's schema.
/// </summary>
public sealed class ToolCallParsingTests
{
    private static readonly Lazy<TokenVocabulary> Vocabulary = new(() => TokenVocabulary.FromTokenizer(CheckpointTokenizer.FromPretrained(TestServer.DemoTeacher)));

    public static TheoryData<string, string, string?, string[]> Outputs => new()
    {
        { "hermes", "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"a \\\"quoted\\\" {brace}\"}}\n</tool_call>", "Let me check.", ["get_weather:{\"city\": \"Paris\", \"days\": [1, 2]}", "search:{\"query\": \"a \\\"quoted\\\" {brace}\"}"] },
        { "hermes", "No tools needed: 2 < 3 and <tool is not a call.", "No tools needed: 2 < 3 and <tool is not a call.", [] },
        { "hermes", "<tool_call>\n{\"arguments\": {\"x\": 1}, \"name\": \"late_name\"}\n</tool_call>", null, ["late_name:{\"x\": 1}"] },
        { "hermes", "<tool_call>\n{\"name\": \"quoted\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>", null, ["quoted:{\"x\": 1}"] },
        { "mistral", "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {\"n\": 2}}]", null, ["a:{}", "b:{\"n\": 2}"] },
        { "llama3_json", "{\"name\": \"f\", \"parameters\": {\"q\": \"x\"}}; {\"name\": \"g\", \"parameters\": {}}", null, ["f:{\"q\": \"x\"}", "g:{}"] },
        { "llama3_json", "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\": 1}}", null, ["f:{\"q\": 1}"] },
        { "llama3_json", "The answer is {42}.", "The answer is {42}.", [] },
    };

    [Theory]
    [MemberData(nameof(Outputs))]
    public void Calls_AreParsed_WholeAndStreamedAlike(string format, string output, string? content, string[] calls)
    {
        var syntax = ToolCallFormat.ByName(format)!;
        var (parsedContent, parsed) = ToolCallStream.Parse(syntax, output);
        Assert.Equal(calls.Length == 0 ? output : content, parsedContent);
        Assert.Equal(calls, parsed.Select(c => $"{c.Name}:{c.Arguments}"));

        // Streamed in pieces of 1..7 characters: the same text, the same calls, names before arguments.
        foreach (var seed in Enumerable.Range(0, 5))
        {
            var random = new Random(seed);
            var stream = new ToolCallStream(syntax);
            var items = new List<ToolStreamItem>();
            for (var at = 0; at < output.Length;)
            {
                var length = Math.Min(output.Length - at, random.Next(1, 8));
                items.AddRange(stream.Feed(output.Substring(at, length)));
                at += length;
            }
            items.AddRange(stream.Finish());
            var text = string.Concat(items.OfType<ContentItem>().Select(c => c.Text));
            Assert.Equal(calls.Length == 0 ? output : content ?? "", calls.Length == 0 ? text : text.Trim());
            var names = items.OfType<CallStartItem>().ToList();
            Assert.Equal(calls.Select(c => c.Split(':')[0]), names.Select(n => n.Name));
            for (var i = 0; i < names.Count; i++)
            {
                var arguments = string.Concat(items.OfType<CallArgumentsItem>().Where(a => a.Index == i).Select(a => a.Text));
                Assert.Equal(calls[i][(calls[i].IndexOf(':') + 1)..], arguments);
                Assert.True(items.IndexOf(names[i]) < items.FindIndex(x => x is CallArgumentsItem a && a.Index == i), "arguments before the name");
            }
        }
    }

    [Fact]
    public void ACallCutOff_IsReturnedAsText_NotAsABrokenCall()
    {
        const string output = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1";
        var (content, calls) = ToolCallStream.Parse(ToolCallFormat.Hermes, output);
        Assert.Empty(calls);
        Assert.Equal(output, content);
    }

    [Theory]
    [InlineData("""{"name":"no markers"}""", null)]
    [InlineData("""{%- if tools %}<tool_call>{% endif %}""", "hermes")]
    [InlineData("""{{ '[TOOL_CALLS]' }}""", "mistral")]
    [InlineData("""<|python_tag|>""", "llama3_json")]
    [InlineData("""<tool_call> and [TOOL_CALLS]""", null)]
    public void TheFormat_IsReadFromTheTemplate_WhenItIsUnambiguous(string template, string? expected)
    {
        Assert.Equal(expected, ToolCallFormat.Detect(template)?.Name);
    }

    private static readonly string[] Schemas =
    [
        """{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","unit"],"additionalProperties":false}""",
        """{"type":"object","properties":{"query":{"type":"string","maxLength":20},"filters":{"type":"array","items":{"type":"string","maxLength":8},"maxItems":3}},"required":["query"]}""",
    ];

    private static ToolRequest Tools(string choice, bool parallel)
    {
        using var tools = JsonDocument.Parse("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":" + Schemas[0] + "}},"
            + "{\"type\":\"function\",\"function\":{\"name\":\"search\",\"parameters\":" + Schemas[1] + "}}]");
        using var toolChoice = JsonDocument.Parse(choice);
        return ToolRequest.FromRequest(tools.RootElement.Clone(), toolChoice.RootElement.Clone(), parallel)!;
    }

    [Theory]
    [InlineData("hermes", "\"required\"", true)]
    [InlineData("hermes", "{\"type\":\"function\",\"function\":{\"name\":\"search\"}}", false)]
    [InlineData("mistral", "\"required\"", true)]
    [InlineData("llama3_json", "\"required\"", false)]
    [InlineData("llama3_json", "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", true)]
    public void WhateverIsSampledUnderTheCallGrammar_ParsesIntoValidCalls(string format, string choice, bool parallel)
    {
        var syntax = ToolCallFormat.ByName(format)!;
        var tools = Tools(choice, parallel);
        var matcher = new GrammarMatcher(Grammar.Compile(ToolCallGrammar.Build(syntax, tools, Vocabulary.Value, content: null)), Vocabulary.Value);
        var validators = tools.Functions.ToDictionary(f => f.Name, f => JsonSchema.FromText(f.Parameters!.Value.GetRawText()));
        for (var seed = 0; seed < 12; seed++)
        {
            var (text, complete, _) = ConstrainedWalks.Walk(matcher, seed, maxTokens: 300);
            Assert.True(complete, text);
            var (_, calls) = ToolCallStream.Parse(syntax, text);
            Assert.NotEmpty(calls);
            if (tools.Choice == ToolChoiceMode.Named)
            {
                Assert.All(calls, c => Assert.Equal(tools.NamedFunction, c.Name));
            }
            if (!parallel)
            {
                Assert.Single(calls);
            }
            foreach (var call in calls)
            {
                using var arguments = JsonDocument.Parse(call.Arguments);
                Assert.True(validators[call.Name].Evaluate(arguments.RootElement).IsValid, $"{call.Name}({call.Arguments}) does not validate; output: {text}");
            }
        }
    }

    [Theory]
    [InlineData("hermes")]
    [InlineData("mistral")]
    [InlineData("llama3_json")]
    public void UnderAuto_TextIsFree_AndAnyCallTheModelOpensIsValid(string format)
    {
        var syntax = ToolCallFormat.ByName(format)!;
        var tools = Tools("\"auto\"", parallel: true);
        var matcher = new GrammarMatcher(Grammar.Compile(ToolCallGrammar.Build(syntax, tools, Vocabulary.Value, content: null)), Vocabulary.Value);
        // Free text allows (nearly) the whole vocabulary; a call opened by the marker is then held to the schema.
        Assert.True(matcher.CountAllowed(matcher.Initial) > Vocabulary.Value.Size * 9 / 10);
        var opened = matcher.AdvanceBytes(matcher.Initial, System.Text.Encoding.UTF8.GetBytes(syntax.Marker is null || syntax.OnlyAtStart ? "{\"name\": \"" : syntax.Marker + (syntax.CallsInArray ? "[" : "\n") + "{\"name\": \""));
        Assert.True(opened >= 0);
        Assert.Equal(-1, matcher.AdvanceBytes(opened, "unknown_tool"u8));
        Assert.True(matcher.AdvanceBytes(opened, "search\", \""u8) >= 0);
    }
}
