using System.Globalization;
using System.Text.Json;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.OpenAi;

/// <summary>
/// Turns protocol requests into engine inputs: prompt token ids and <see cref="SamplingParams"/>. Checks what the
/// engine cannot (field shapes, unknown model, roles, the context length with the numbers) and leaves value ranges
/// to <see cref="SamplingParams.Validate"/>, which the engine applies on submission.
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
        if (!string.IsNullOrEmpty(requested) && !string.Equals(requested, model.Id, StringComparison.Ordinal))
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

    /// <summary>Tool calling and structured output are refused with a clear 400 rather than silently ignored.</summary>
    public static void CheckUnsupported(ChatCompletionRequest request)
    {
        static bool Present(JsonElement? value) => value is { ValueKind: not (JsonValueKind.Null or JsonValueKind.Undefined) };
        var toolChoiceNone = request.ToolChoice is { ValueKind: JsonValueKind.String } choice && choice.ValueEquals("none");
        if (Present(request.ToolChoice) && !toolChoiceNone)
        {
            throw ApiException.BadRequest("'tool_choice' is not supported by this server (tool calling is not implemented); leave it out or set it to \"none\"", "tool_choice", "unsupported_parameter");
        }
        if (Present(request.Tools) && !toolChoiceNone && !(request.Tools!.Value.ValueKind == JsonValueKind.Array && request.Tools.Value.GetArrayLength() == 0))
        {
            throw ApiException.BadRequest("'tools' is not supported by this server (tool calling is not implemented); leave it out", "tools", "unsupported_parameter");
        }
        if (Present(request.ResponseFormat))
        {
            var format = request.ResponseFormat!.Value;
            var isText = format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out var type)
                && type.ValueKind == JsonValueKind.String && type.ValueEquals("text");
            if (!isText)
            {
                throw ApiException.BadRequest("'response_format' is not supported by this server except {\"type\":\"text\"} (no JSON mode or structured output)", "response_format", "unsupported_parameter");
            }
        }
    }

    /// <summary>Messages as the chat template sees them (content flattened to a string) and the rendered, tokenized prompt.</summary>
    public static IReadOnlyList<int> ChatPrompt(ChatCompletionRequest request, LoadedModel model)
    {
        if (request.Messages is not { Count: > 0 } messages)
        {
            throw ApiException.BadRequest("'messages' must be a non-empty list of messages", "messages");
        }
        if (model.ChatTemplate is null)
        {
            throw new ApiException(400, model.ChatTemplateError ?? "the model has no chat template; use /v1/completions", "messages", "chat_template_not_found");
        }
        var flattened = new List<Dictionary<string, object?>>(messages.Count);
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
            var content = Content(message.Content, i);
            var entry = new Dictionary<string, object?> { ["role"] = message.Role, ["content"] = content };
            if (message.Name is not null)
            {
                entry["name"] = message.Name;
            }
            flattened.Add(entry);
            // Every message costs at least its text; many tiny messages cost their roles (the template adds more).
            chars += content.Length + message.Role.Length + (message.Name?.Length ?? 0);
            CheckTextLength(chars, model, "messages");
        }
        var json = JsonSerializer.SerializeToElement(flattened);
        var text = model.ChatTemplate.Render(json, addGenerationPrompt: true);
        CheckTextLength(text.Length, model, "messages");
        // The template writes any BOS itself, as transformers' apply_chat_template does.
        return model.Tokenizer.Encode(text, addBosToken: false);
    }

    private static string Content(JsonElement? content, int index)
    {
        if (content is not { } value || value.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
        {
            return "";
        }
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                return Text(value, $"messages[{index}].content");
            case JsonValueKind.Array:
                var parts = new List<string>();
                var p = 0;
                foreach (var part in value.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                    {
                        throw ApiException.BadRequest($"messages[{index}].content[{p}] must be an object with a 'type'", $"messages[{index}].content[{p}]");
                    }
                    var kind = Text(type, $"messages[{index}].content[{p}].type");
                    if (kind != "text" || !part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                    {
                        throw ApiException.BadRequest($"messages[{index}].content[{p}]: only text parts ({{\"type\":\"text\",\"text\":\"...\"}}) are supported, got type '{kind}'", $"messages[{index}].content[{p}]");
                    }
                    parts.Add(Text(text, $"messages[{index}].content[{p}].text"));
                    p++;
                }
                return string.Join("\n", parts);
            default:
                throw ApiException.BadRequest($"messages[{index}].content must be a string or a list of text parts, not {value.ValueKind.ToString().ToLowerInvariant()}", $"messages[{index}].content");
        }
    }

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

    /// <summary>Refuses n outside 1..128 (the same check <see cref="Sampling"/> makes, for callers that need n first).</summary>
    public static void CheckN(int? n)
    {
        if (n is < 1 or > 128)
        {
            throw ApiException.BadRequest($"'n' must be between 1 and 128, got {n}", "n");
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
        return Sampling(r, param, maxTokens, promptTokens, model, r.Logprobs == true, r.Logprobs == true ? r.TopLogprobs ?? 0 : 0, defaultMaxTokens: null, promptParam: "messages");
    }

    public static SamplingParams CompletionSampling(CompletionRequest r, int promptTokens, LoadedModel model)
    {
        if (r.Logprobs is < 0 or > 5)
        {
            throw ApiException.BadRequest($"'logprobs' must be between 0 and 5, got {r.Logprobs}", "logprobs");
        }
        return Sampling(r, "max_tokens", r.MaxTokens, promptTokens, model, r.Logprobs is not null, r.Logprobs ?? 0, defaultMaxTokens: 16, promptParam: "prompt");
    }

    /// <summary>The shared fields of <paramref name="r"/> to engine parameters; the caller resolves max tokens and logprobs, whose shapes differ.</summary>
    private static SamplingParams Sampling(GenerationRequestBase r, string maxTokensParam, int? maxTokens, int promptTokens, LoadedModel model,
        bool logprobs, int topLogprobs, int? defaultMaxTokens, string promptParam)
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
                $"This model's maximum context length is {maxModelLen} tokens. However, you requested {(long)promptTokens + maxTokens.Value} tokens ({promptTokens} in the messages, {maxTokens} in the completion). Please reduce the length of the messages or completion.",
                maxTokensParam, "context_length_exceeded");
        }
        CheckN(r.N);
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
            MaxTokens = maxTokens ?? Math.Min(defaultMaxTokens ?? int.MaxValue, maxModelLen - promptTokens),
            MinTokens = r.MinTokens ?? 0,
            Stop = r.Stop ?? [],
            StopTokenIds = r.StopTokenIds ?? [],
            IgnoreEos = r.IgnoreEos ?? false,
            N = r.N ?? 1,
        };
    }
}
