using System.Text.Json;
using RecurFormer.Templates.Values;

namespace RecurFormer.Templates.ChatTemplates;

/// <summary>
/// A checkpoint's chat template(s), parsed, with its special tokens: renders OpenAI-style messages into the prompt
/// text exactly as transformers' <c>apply_chat_template(..., tokenize=False)</c> does. Immutable and thread-safe.
/// </summary>
public sealed class ChatTemplate
{
    public ChatTemplate(IReadOnlyDictionary<string, Template> templates, IReadOnlyDictionary<string, object?> specialTokens)
    {
        if (templates.Count == 0)
        {
            throw new ArgumentException("at least one template is needed", nameof(templates));
        }
        Templates = templates;
        SpecialTokens = specialTokens;
    }

    /// <summary>By name; a checkpoint with a single template has it under "default".</summary>
    public IReadOnlyDictionary<string, Template> Templates { get; }

    /// <summary>bos_token, eos_token, … as the template sees them (tokens that are null are absent, as in transformers).</summary>
    public IReadOnlyDictionary<string, object?> SpecialTokens { get; }

    /// <summary>transformers' choice: "tool_use" when tools are given and the checkpoint has it, else "default".</summary>
    public Template Select(bool hasTools)
    {
        if (hasTools && Templates.TryGetValue("tool_use", out var toolUse))
        {
            return toolUse;
        }
        if (Templates.TryGetValue("default", out var fallback))
        {
            return fallback;
        }
        if (Templates.Count == 1)
        {
            return Templates.Values.First();
        }
        throw new ChatTemplateNotFoundException(
            $"the checkpoint has several chat templates ({string.Join(", ", Templates.Keys)}) and none is named 'default'");
    }

    /// <summary>
    /// Renders a conversation. <paramref name="messages"/> is the OpenAI-style JSON array; content that is a list of
    /// parts reaches the template as a list, as in transformers. <paramref name="extra"/> adds or overrides variables
    /// (enable_thinking, date_string, …).
    /// </summary>
    public string Render(JsonElement messages, JsonElement? tools = null, bool addGenerationPrompt = false,
        IEnumerable<KeyValuePair<string, object?>>? extra = null)
    {
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = PyJson.FromJson(messages),
            ["tools"] = tools is { ValueKind: not JsonValueKind.Null and not JsonValueKind.Undefined } t ? PyJson.FromJson(t) : null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        foreach (var (name, value) in extra ?? [])
        {
            variables[name] = PyValue.From(value);
        }
        return RenderVariables(variables);
    }

    /// <summary>
    /// Renders with explicit variables (the CLI's context file). Like transformers, <c>tools</c> and <c>documents</c>
    /// default to None, <c>add_generation_prompt</c> to False, and the special tokens come from the checkpoint unless
    /// the variables set them.
    /// </summary>
    public string RenderVariables(IReadOnlyDictionary<string, object?> variables)
    {
        if (!variables.ContainsKey("messages"))
        {
            throw new ChatInputException("the chat input has no 'messages'");
        }
        var merged = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["tools"] = null,
            ["documents"] = null,
            ["add_generation_prompt"] = false,
        };
        foreach (var (name, value) in SpecialTokens)
        {
            merged[name] = value;
        }
        foreach (var (name, value) in variables)
        {
            merged[name] = PyValue.From(value);
        }
        ValidateMessages(merged["messages"]);
        var hasTools = PyOps.IsTrue(merged["tools"]);
        return Select(hasTools).Render(merged);
    }

    /// <summary>What transformers would choke on or a template cannot meaningfully use, refused with a clear message.</summary>
    public static void ValidateMessages(object? messages)
    {
        if (messages is not List<object?> list)
        {
            throw new ChatInputException($"'messages' must be a list of messages, not {PyOps.TypeName(messages)}");
        }
        for (var i = 0; i < list.Count; i++)
        {
            if (list[i] is not PyDict message)
            {
                throw new ChatInputException($"message {i} must be an object with 'role' and 'content', not {PyOps.TypeName(list[i])}");
            }
            if (!message.TryGet("role", out var role) || role is not string)
            {
                throw new ChatInputException($"message {i} has no 'role' string");
            }
            // Content may be any JSON value (a tool's result is often an object): transformers passes it as it is.
        }
    }
}
