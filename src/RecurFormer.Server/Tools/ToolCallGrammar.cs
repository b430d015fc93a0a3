using System.Text;
using RecurFormer.StructuredOutput;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Json;
using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.Server.Tools;

/// <summary>
/// The grammar of tool calls in a model family's own format, with each function's arguments held to its JSON
/// Schema: <c>required</c> and a named function admit nothing but calls; <c>auto</c> admits free text, and once the
/// model opens a call (Hermes <c>&lt;tool_call&gt;</c>, Mistral <c>[TOOL_CALLS]</c>, a Llama 3 answer starting with
/// <c>{</c>) the call itself is constrained, so a model that decides to call always writes a call that parses and
/// validates. With a response format in <c>auto</c>, the answer is either that format or calls.
/// </summary>
public static class ToolCallGrammar
{
    public static GrammarDefinition Build(ToolCallFormat format, ToolRequest tools, TokenVocabulary vocabulary, GrammarDefinition? content)
    {
        var rules = new Dictionary<string, Node>(StringComparer.Ordinal);
        var functions = tools.Choice == ToolChoiceMode.Named ? tools.Functions.Where(f => f.Name == tools.NamedFunction).ToList() : tools.Functions;
        var calls = functions.Select((function, i) =>
        {
            Node arguments;
            try
            {
                arguments = function.Parameters is { } schema
                    ? JsonSchemaCompiler.Compile(schema).EmbedInto(rules, $"tool{i}:")
                    : Node.Seq(Node.Literal("{"), Node.Literal("}"));
            }
            catch (StructuredOutputException error)
            {
                throw new StructuredOutputException($"tools[{tools.Functions.ToList().IndexOf(function)}] ('{function.Name}') parameters: {error.Message}");
            }
            return Node.Seq(Node.Literal("{\"name\": "), JsonGrammar.Key(function.Name), Node.Literal($", \"{format.ArgumentsKey}\": "), arguments, Node.Literal("}"));
        }).ToArray();
        var call = Node.Alt(calls);
        var marker = format.Marker is { } text ? Marker(text, vocabulary) : Node.Empty;
        var parallel = tools.ParallelToolCalls && tools.Choice != ToolChoiceMode.Named;

        // What follows the marker (one call for Hermes, whose every call has its own marker; all calls for Mistral).
        Node afterMarker;
        Node block;
        if (format == ToolCallFormat.Hermes)
        {
            afterMarker = Node.Seq(Node.Literal("\n"), call, Node.Literal("\n"), Node.Literal(format.Closer!));
            var one = Node.Seq(marker, afterMarker);
            block = parallel ? Node.Seq(one, Node.Star(Node.Seq(Node.Literal("\n"), one))) : one;
        }
        else if (format.CallsInArray)
        {
            afterMarker = Node.Seq(Node.Literal("["), call, parallel ? Node.Star(Node.Seq(Node.Literal(", "), call)) : Node.Empty, Node.Literal("]"));
            block = Node.Seq(marker, afterMarker);
        }
        else
        {
            block = afterMarker = Node.Seq(call, parallel ? Node.Star(Node.Seq(Node.Literal("; "), call)) : Node.Empty);
        }

        if (tools.Choice is ToolChoiceMode.Required or ToolChoiceMode.Named)
        {
            rules["root"] = block;
            return new GrammarDefinition(rules, "root");
        }
        if (content is not null)
        {
            rules["root"] = Node.Alt(content.EmbedInto(rules, "content:"), block);
            return new GrammarDefinition(rules, "root");
        }
        // auto: free text until the model opens a call.
        var anyByte = new ByteSetNode(ByteSet.All);
        if (format.OnlyAtStart)
        {
            var notACall = Node.Seq(new ByteSetNode(ByteSet.All.Except(ByteSet.Of((byte)'{'))), Node.Star(anyByte));
            rules["root"] = Node.Alt(Node.Empty, block, notACall);
        }
        else if (marker is TokenNode)
        {
            // A special token cannot be spelled in text: any text, then optionally the calls.
            rules["root"] = Node.Seq(Node.Star(anyByte), Node.Optional(block));
        }
        else
        {
            rules["after-marker"] = parallel ? Node.Seq(afterMarker, new RuleNode("text-0")) : afterMarker;
            AddTextAvoiding(rules, Encoding.UTF8.GetBytes(format.Marker!), "text-", "after-marker");
            rules["root"] = new RuleNode("text-0");
        }
        return new GrammarDefinition(rules, "root");
    }

    /// <summary>A special token when the vocabulary has one spelled so (Mistral's [TOOL_CALLS]), else the text.</summary>
    private static Node Marker(string text, TokenVocabulary vocabulary) =>
        vocabulary.TryGetSpecialToken(text, out var id) ? new TokenNode(id) : Node.Literal(text);

    /// <summary>
    /// Text in which <paramref name="trigger"/> does not occur, except that completing it continues with the rule
    /// <paramref name="afterTrigger"/>: the string-matching automaton of Knuth–Morris–Pratt, one rule per matched prefix
    /// length (all calls are tail calls, so it runs without a stack).
    /// </summary>
    private static void AddTextAvoiding(Dictionary<string, Node> rules, byte[] trigger, string prefix, string afterTrigger)
    {
        var failure = new int[trigger.Length];
        for (int i = 1, k = 0; i < trigger.Length; i++)
        {
            while (k > 0 && trigger[i] != trigger[k])
            {
                k = failure[k - 1];
            }
            if (trigger[i] == trigger[k])
            {
                k++;
            }
            failure[i] = k;
        }
        int Next(int state, int b)
        {
            while (state > 0 && trigger[state] != b)
            {
                state = failure[state - 1];
            }
            return trigger[state] == b ? state + 1 : 0;
        }
        for (var state = 0; state < trigger.Length; state++)
        {
            var byTarget = new Dictionary<int, ByteSet>();
            for (var b = 0; b < 256; b++)
            {
                var target = Next(state, b);
                byTarget[target] = (byTarget.TryGetValue(target, out var set) ? set : default).Union(ByteSet.Of((byte)b));
            }
            var options = new List<Node> { Node.Empty };
            foreach (var (target, bytes) in byTarget.OrderBy(kv => kv.Key))
            {
                options.Add(Node.Seq(new ByteSetNode(bytes), new RuleNode(target == trigger.Length ? afterTrigger : $"{prefix}{target}")));
            }
            rules[$"{prefix}{state}"] = Node.Alt([.. options]);
        }
    }
}
