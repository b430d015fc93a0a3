using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.OpenAi;

/// <summary>
/// Turns protocol requests into engine inputs: prompt token ids (the chat template applied to messages, tools and
/// template variables) and <see cref="SamplingParams"/>. It checks what only the protocol knows — field shapes, the
/// model name, roles, text and context lengths with the numbers, the prompts × n cap, token limits that must not
/// overflow — and leaves the value ranges of sampling parameters to <see cref="SamplingParams.Validate"/>, which the
/// engine applies when the request is submitted.
/// </summary>
public static class RequestMapping
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>Most prompts × choices one request may ask for.</summary>
    public const int MaxSequencesPerRequest = 256;

    /// <summary>
    /// A generous bound on the characters one token can hold: text longer than max model length × this cannot fit the
    /// context whatever the tokenizer does, so it is refused before spending time on the chat template or tokenizer.
    /// </summary>
    public const int MaxCharsPerToken = 32;

    /// <summary>Refuses text (UTF-16 code units) that cannot fit the context, before it is rendered or tokenized.</summary>
    public static void CheckTextLength(long chars, LoadedModel model, string param)
    {
        var maxModelLen = model.Engine.MaxModelLen;
        var limit = (long)maxModelLen * MaxCharsPerToken;
        if (chars > limit)
        {
            throw new ApiException(400,
                $"This model's maximum context length is {maxModelLen} tokens. However, your {(param == "messages" ? "messages have" : "prompt has")} {chars} characters, more than the {limit} ({MaxCharsPerToken} per token) that could fit. Please shorten the {(param == "messages" ? "messages" : "prompt")}.",
                param, "context_length_exceeded");
        }
    }

    /// <summary>Refuses a prompt of token ids that leaves no room for a completion (before it is decoded).</summary>
    private static void CheckPromptTokens(int promptTokens, LoadedModel model, string param)
    {
        var maxModelLen = model.Engine.MaxModelLen;
        if (promptTokens >= maxModelLen)
        {
            throw new ApiException(400,
                $"This model's maximum context length is {maxModelLen} tokens. However, your prompt has {promptTokens} tokens, which leaves no room for a completion. Please shorten the prompt.",
                param, "context_length_exceeded");
        }
    }

    public static void CheckModel(string? requested, LoadedModel model)
    {
        if (!string.IsNullOrEmpty(requested) && !model.Serves(requested))
        {
            throw new ApiException(404, $"The model '{requested}' does not exist; this server serves '{model.Id}'", "model", "model_not_found");
        }
    }

    /// <summary><c>stream_options</c> only means something on a stream; OpenAI and vLLM refuse it otherwise.</summary>
    public static void CheckStreamOptions(bool? stream, StreamOptions? options)
    {
        if (options is not null && stream != true)
        {
            throw ApiException.BadRequest("'stream_options' can only be given when 'stream' is true", "stream_options");
        }
    }

    /// <summary>Template variables a request may not set through <c>chat_template_kwargs</c>: they come from the request's own fields.</summary>
    private static readonly HashSet<string> ReservedTemplateVariables = ["messages", "tools", "add_generation_prompt"];

    /// <summary>
    /// The rendered, tokenized prompt: messages as transformers passes them to the template (text parts joined into a
    /// string, a tool result of any JSON type as it is, an assistant's tool call arguments as objects), the tools, and
    /// the request's <c>chat_template_kwargs</c>.
    /// </summary>
    public static IReadOnlyList<int> ChatPrompt(ChatCompletionRequest request, LoadedModel model, Tools.ToolRequest? tools = null)
    {
        if (request.Messages is not { Count: > 0 } messages)
        {
            throw ApiException.BadRequest("'messages' must be a non-empty list of messages", "messages");
        }
        if (model.ChatTemplate is null)
        {
            throw new ApiException(400, model.ChatTemplateError ?? "the model has no chat template; use /v1/completions", "messages", "chat_template_not_found");
        }
        var templateMessages = new List<Dictionary<string, object?>>(messages.Count);
        long chars = 0;
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i] ?? throw ApiException.BadRequest($"messages[{i}] must be an object", $"messages[{i}]");
            if (string.IsNullOrEmpty(message.Role))
            {
                throw ApiException.BadRequest($"messages[{i}] has no 'role'", $"messages[{i}].role");
            }
            if (!Roles.Contains(message.Role))
            {
                throw ApiException.BadRequest($"messages[{i}] has the unknown role '{message.Role}'; expected one of system, developer, user, assistant, tool", $"messages[{i}].role");
            }
            var (content, contentChars) = Content(message.Content, i, anyJson: message.Role == "tool");
            var entry = new Dictionary<string, object?> { ["role"] = message.Role, ["content"] = content };
            if (message.Name is not null)
            {
                entry["name"] = message.Name;
            }
            if (message.ToolCallId is not null)
            {
                entry["tool_call_id"] = message.ToolCallId;
            }
            if (message.ToolCalls is { ValueKind: not (JsonValueKind.Null or JsonValueKind.Undefined) } calls)
            {
                entry["tool_calls"] = TemplateToolCalls(calls, i);
                chars += calls.GetRawText().Length;
            }
            templateMessages.Add(entry);
            // Every message costs at least its text; many tiny messages cost their roles (the template adds more).
            chars += contentChars + message.Role.Length + (message.Name?.Length ?? 0);
            CheckTextLength(chars, model, "messages");
        }
        var extra = new List<KeyValuePair<string, object?>>();
        foreach (var (name, value) in request.ChatTemplateKwargs ?? [])
        {
            if (ReservedTemplateVariables.Contains(name))
            {
                throw ApiException.BadRequest($"'chat_template_kwargs' may not set '{name}'; it comes from the request itself", "chat_template_kwargs");
            }
            extra.Add(new(name, value));
        }
        var toolsJson = tools is { Functions.Count: > 0 } ? tools.ToolsJson : (JsonElement?)null;
        if (toolsJson is { } t)
        {
            CheckTextLength(chars + t.GetRawText().Length, model, "messages");
        }
        var json = JsonSerializer.SerializeToElement(templateMessages);
        var text = model.ChatTemplate.Render(json, toolsJson, addGenerationPrompt: true, extra);
        CheckTextLength(text.Length, model, "messages");
        // The template writes any BOS itself, as transformers' apply_chat_template does.
        return model.Tokenizer.Encode(text, addBosToken: false);
    }

    /// <summary>
    /// An assistant message's tool calls for the template: arguments, a JSON string in OpenAI's protocol, become the
    /// object they encode (templates such as Llama 3.1's and Qwen's write them with tojson), as vLLM does.
    /// </summary>
    private static JsonElement TemplateToolCalls(JsonElement calls, int index)
    {
        if (calls.ValueKind != JsonValueKind.Array)
        {
            throw ApiException.BadRequest($"messages[{index}].tool_calls must be an array", $"messages[{index}].tool_calls");
        }
        var node = JsonNode.Parse(calls.GetRawText())!.AsArray();
        foreach (var call in node)
        {
            if (call?["function"] is JsonObject function && function["arguments"] is JsonValue arguments && arguments.TryGetValue<string>(out var encoded))
            {
                try
                {
                    function["arguments"] = JsonNode.Parse(encoded);
                }
                catch (JsonException)
                {
                    // Not JSON: the template gets the string as sent.
                }
            }
        }
        return JsonSerializer.SerializeToElement(node);
    }

    /// <summary>
    /// A message's content for the template and its length in characters: a string; null as ""; text parts joined
    /// into one string; and for tool results any other JSON value as it is (objects reach the template as dicts).
    /// </summary>
    private static (object? Content, long Chars) Content(JsonElement? content, int index, bool anyJson)
    {
        if (content is not { } value || value.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
        {
            return ("", 0);
        }
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                var text = Text(value, $"messages[{index}].content");
                return (text, text.Length);
            case JsonValueKind.Array when !anyJson || IsTextParts(value):
                var parts = new List<string>();
                var p = 0;
                foreach (var part in value.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                    {
                        throw ApiException.BadRequest($"messages[{index}].content[{p}] must be an object with a 'type'", $"messages[{index}].content[{p}]");
                    }
                    var kind = Text(type, $"messages[{index}].content[{p}].type");
                    if (kind != "text" || !part.TryGetProperty("text", out var partText) || partText.ValueKind != JsonValueKind.String)
                    {
                        throw ApiException.BadRequest($"messages[{index}].content[{p}]: only text parts ({{\"type\":\"text\",\"text\":\"...\"}}) are supported, got type '{kind}'", $"messages[{index}].content[{p}]");
                    }
                    parts.Add(Text(partText, $"messages[{index}].content[{p}].text"));
                    p++;
                }
                var joined = string.Join("\n", parts);
                return (joined, joined.Length);
            case JsonValueKind.Object or JsonValueKind.Array or JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False when anyJson:
                return (value, value.GetRawText().Length);
            default:
                throw ApiException.BadRequest($"messages[{index}].content must be a string or a list of text parts, not {value.ValueKind.ToString().ToLowerInvariant()}", $"messages[{index}].content");
        }
    }

    private static bool IsTextParts(JsonElement array) =>
        array.GetArrayLength() > 0 && array.EnumerateArray().All(part => part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String);

    /// <summary>A string kept as a JsonElement: the parser checks its syntax, not its UTF-8, which is checked here.</summary>
    private static string Text(JsonElement value, string param)
    {
        try
        {
            return value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw ApiException.BadRequest($"'{param}' is not valid UTF-8", param, "invalid_utf8");
        }
    }

    /// <summary>
    /// How many prompts a completion request holds, read from the JSON shape alone (nothing tokenized): 1 for a string
    /// or a list of token ids, else the list's length. Malformed shapes count 1 and are reported by <see cref="CompletionPrompts"/>.
    /// </summary>
    public static int CompletionPromptCount(CompletionRequest request) =>
        request.Prompt is { ValueKind: JsonValueKind.Array } prompt && prompt.GetArrayLength() > 0 && prompt[0].ValueKind != JsonValueKind.Number
            ? prompt.GetArrayLength()
            : 1;

    /// <summary>Refuses n out of range before anything is tokenized; the range is <see cref="SamplingParams.Validate"/>'s.</summary>
    public static void CheckN(int? n)
    {
        if (n is { } value && new SamplingParams { N = value }.Validate(vocabSize: 0) is { Param: "n" } problem)
        {
            throw ApiException.BadRequest(problem.Message, "n");
        }
    }

    /// <summary>The prompts of a completion request: a string, strings, token ids, or lists of token ids.</summary>
    public static List<(IReadOnlyList<int> Tokens, string Text)> CompletionPrompts(CompletionRequest request, LoadedModel model)
    {
        const string shape = "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids";
        if (request.Prompt is not { } prompt || prompt.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
        {
            throw ApiException.BadRequest("'prompt' is required", "prompt");
        }
        var tokenizer = model.Tokenizer;
        (IReadOnlyList<int>, string) FromText(string text)
        {
            CheckTextLength(text.Length, model, "prompt");
            return (tokenizer.Encode(text), text);
        }
        (IReadOnlyList<int>, string) FromIds(JsonElement array)
        {
            CheckPromptTokens(array.GetArrayLength(), model, "prompt");
            var ids = new List<int>();
            foreach (var item in array.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out var id))
                {
                    throw ApiException.BadRequest(shape, "prompt");
                }
                if (id < 0 || id >= tokenizer.VocabSize)
                {
                    throw ApiException.BadRequest($"token id {id} in 'prompt' is outside the vocabulary (0..{tokenizer.VocabSize - 1})", "prompt");
                }
                ids.Add(id);
            }
            return (ids, tokenizer.Decode(ids));
        }
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return [FromText(Text(prompt, "prompt"))];
            case JsonValueKind.Array when prompt.GetArrayLength() == 0:
                throw ApiException.BadRequest("'prompt' must not be empty", "prompt");
            case JsonValueKind.Array:
                var first = prompt[0].ValueKind;
                if (first == JsonValueKind.Number)
                {
                    return [FromIds(prompt)];
                }
                var prompts = new List<(IReadOnlyList<int>, string)>();
                foreach (var item in prompt.EnumerateArray())
                {
                    prompts.Add(item.ValueKind switch
                    {
                        JsonValueKind.String when first == JsonValueKind.String => FromText(Text(item, "prompt")),
                        JsonValueKind.Array when first == JsonValueKind.Array => FromIds(item),
                        _ => throw ApiException.BadRequest(shape, "prompt"),
                    });
                }
                return prompts;
            default:
                throw ApiException.BadRequest(shape, "prompt");
        }
    }

    public static SamplingParams ChatSampling(ChatCompletionRequest r, int promptTokens, LoadedModel model)
    {
        if (r.TopLogprobs is > 0 && r.Logprobs != true)
        {
            throw ApiException.BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
        }
        var maxTokens = r.MaxCompletionTokens ?? r.MaxTokens;
        var param = r.MaxCompletionTokens is null ? "max_tokens" : "max_completion_tokens";
        return Sampling(r, param, maxTokens, promptTokens, model, r.Logprobs == true, r.Logprobs == true ? r.TopLogprobs ?? 0 : 0, r.PromptLogprobs, defaultMaxTokens: null, promptParam: "messages");
    }

    public static SamplingParams CompletionSampling(CompletionRequest r, int promptTokens, LoadedModel model)
    {
        if (r.Logprobs is < 0 or > 5)
        {
            throw ApiException.BadRequest($"'logprobs' must be between 0 and 5, got {r.Logprobs}", "logprobs");
        }
        // echo with logprobs (lm-evaluation-harness' loglikelihood requests) needs the prompt's own log-probabilities.
        var promptLogprobs = r.Echo == true && r.Logprobs is { } alternatives ? Math.Max(alternatives, r.PromptLogprobs ?? 0) : r.PromptLogprobs;
        return Sampling(r, "max_tokens", r.MaxTokens, promptTokens, model, r.Logprobs is not null, r.Logprobs ?? 0, promptLogprobs, defaultMaxTokens: 16, promptParam: "prompt");
    }

    /// <summary>The shared fields of <paramref name="r"/> to engine parameters; the caller resolves max tokens and logprobs, whose shapes differ.</summary>
    private static SamplingParams Sampling(GenerationRequestBase r, string maxTokensParam, int? maxTokens, int promptTokens, LoadedModel model,
        bool logprobs, int topLogprobs, int? promptLogprobs, int? defaultMaxTokens, string promptParam)
    {
        var maxModelLen = model.Engine.MaxModelLen;
        CheckPromptTokens(promptTokens, model, promptParam);
        if (maxTokens is < 1)
        {
            throw ApiException.BadRequest($"'{maxTokensParam}' must be at least 1, got {maxTokens}", maxTokensParam);
        }
        // Checked here, not only in the engine, so that prompt + max_tokens cannot overflow an int there.
        if (maxTokens > maxModelLen - promptTokens)
        {
            throw new ApiException(400,
                $"This model's maximum context length is {maxModelLen} tokens. However, you requested {(long)promptTokens + maxTokens.Value} tokens ({promptTokens} in the {promptParam}, {maxTokens} in the completion). Please reduce the length of the {promptParam} or completion.",
                maxTokensParam, "context_length_exceeded");
        }
        var bias = new Dictionary<int, double>();
        foreach (var (key, value) in r.LogitBias ?? [])
        {
            if (!int.TryParse(key, NumberStyles.Integer, CultureInfo.InvariantCulture, out var token))
            {
                throw ApiException.BadRequest($"'logit_bias' keys must be token ids, got '{key}'", "logit_bias");
            }
            bias[token] = value;
        }
        return new SamplingParams
        {
            Temperature = r.Temperature ?? 1.0,
            TopP = r.TopP ?? 1.0,
            TopK = r.TopK ?? 0,
            MinP = r.MinP ?? 0,
            Seed = r.Seed,
            PresencePenalty = r.PresencePenalty ?? 0,
            FrequencyPenalty = r.FrequencyPenalty ?? 0,
            RepetitionPenalty = r.RepetitionPenalty ?? 1.0,
            LogitBias = bias,
            Logprobs = logprobs,
            TopLogprobs = topLogprobs,
            PromptLogprobs = promptLogprobs,
            MaxTokens = maxTokens ?? Math.Min(defaultMaxTokens ?? int.MaxValue, maxModelLen - promptTokens),
            MinTokens = r.MinTokens ?? 0,
            Stop = r.Stop ?? [],
            StopTokenIds = r.StopTokenIds ?? [],
            IgnoreEos = r.IgnoreEos ?? false,
            N = r.N ?? 1,
        };
    }
}
