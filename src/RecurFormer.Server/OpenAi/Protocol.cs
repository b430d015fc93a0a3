using System.Text.Json;
using System.Text.Json.Serialization;

namespace RecurFormer.Server.OpenAi;

// The OpenAI wire protocol (plus vLLM's sampling extras). Property names are snake_case through the serializer's
// naming policy; unknown fields are ignored. Polymorphic fields (content, prompt) stay JsonElement and are checked
// when the request is mapped, so that the error names the field and says what was expected.

/// <summary>
/// The sampling, stopping and streaming fields that chat and legacy completions share (OpenAI's and vLLM's names);
/// each request adds its prompt and its own logprobs shape.
/// </summary>
public abstract class GenerationRequestBase
{
    public string? Model { get; set; }
    public int? MaxTokens { get; set; }
    public double? Temperature { get; set; }
    public double? TopP { get; set; }
    public int? N { get; set; }
    /// <summary>A string or a list of up to 16 strings.</summary>
    [JsonConverter(typeof(StringOrListConverter))]
    public List<string>? Stop { get; set; }
    public long? Seed { get; set; }
    public double? PresencePenalty { get; set; }
    public double? FrequencyPenalty { get; set; }
    /// <summary>Token id (as a string) to a bias in [-100, 100].</summary>
    public Dictionary<string, double>? LogitBias { get; set; }
    public bool? Stream { get; set; }
    public StreamOptions? StreamOptions { get; set; }
    // vLLM extras
    public int? TopK { get; set; }
    public double? MinP { get; set; }
    public double? RepetitionPenalty { get; set; }
    public int? MinTokens { get; set; }
    public bool? IgnoreEos { get; set; }
    public List<int>? StopTokenIds { get; set; }

    // Structured output: OpenAI's response_format, vLLM's guided_* fields and their newer structured_outputs object.
    /// <summary><c>{"type":"text"}</c>, <c>{"type":"json_object"}</c> or <c>{"type":"json_schema","json_schema":{"name","schema","strict"}}</c>.</summary>
    public JsonElement? ResponseFormat { get; set; }
    /// <summary>vLLM: a JSON Schema (object or JSON string) the output must validate against.</summary>
    public JsonElement? GuidedJson { get; set; }
    /// <summary>vLLM: a regular expression the whole output must match.</summary>
    public string? GuidedRegex { get; set; }
    /// <summary>vLLM: the output is exactly one of these strings.</summary>
    public List<string>? GuidedChoice { get; set; }
    /// <summary>vLLM: a GBNF grammar (root ::= …) the output must follow.</summary>
    public string? GuidedGrammar { get; set; }
    /// <summary>vLLM: refused (whitespace inside JSON output is fixed).</summary>
    public string? GuidedWhitespacePattern { get; set; }
    /// <summary>vLLM: accepted and ignored (there is one backend).</summary>
    public string? GuidedDecodingBackend { get; set; }
    /// <summary>vLLM ≥ 0.10: <c>{"json"|"regex"|"choice"|"grammar"|"json_object": …}</c>.</summary>
    public JsonElement? StructuredOutputs { get; set; }

    /// <summary>vLLM: log-probabilities of the prompt's tokens with this many alternatives (0..20), computed in the prefill.</summary>
    public int? PromptLogprobs { get; set; }
}

public sealed class ChatCompletionRequest : GenerationRequestBase
{
    /// <summary>The conversation; content is a string or a list of <c>{"type":"text","text":…}</c> parts.</summary>
    public List<ChatMessage>? Messages { get; set; }
    public int? MaxCompletionTokens { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
    /// <summary><c>[{"type":"function","function":{"name","description","parameters"}}]</c>: passed to the chat template; calls in the output come back as <c>tool_calls</c>.</summary>
    public JsonElement? Tools { get; set; }
    /// <summary><c>"none"</c>, <c>"auto"</c> (default with tools), <c>"required"</c>, or <c>{"type":"function","function":{"name":…}}</c>.</summary>
    public JsonElement? ToolChoice { get; set; }
    /// <summary>Whether several calls may come in one answer (default true).</summary>
    public bool? ParallelToolCalls { get; set; }
    /// <summary>vLLM: extra variables for the chat template, e.g. <c>{"enable_thinking": false}</c>.</summary>
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; set; }
}

public sealed class ChatMessage
{
    public string? Role { get; set; }
    /// <summary>A string, null, a list of text parts, or (tool results) any JSON value.</summary>
    public JsonElement? Content { get; set; }
    public string? Name { get; set; }
    /// <summary>An assistant message's calls: <c>[{"id","type":"function","function":{"name","arguments"}}]</c>.</summary>
    public JsonElement? ToolCalls { get; set; }
    /// <summary>A tool message: the id of the call it answers.</summary>
    public string? ToolCallId { get; set; }
}

public sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

public sealed class CompletionRequest : GenerationRequestBase
{
    /// <summary>A string, a list of strings, a list of token ids, or a list of lists of token ids.</summary>
    public JsonElement? Prompt { get; set; }
    /// <summary>Legacy shape: the number of most likely alternatives per token (0..5).</summary>
    public int? Logprobs { get; set; }
    /// <summary>Return the prompt followed by the completion.</summary>
    public bool? Echo { get; set; }
    public string? Suffix { get; set; }
    public int? BestOf { get; set; }
}

public sealed record UsageInfo(int PromptTokens, int CompletionTokens, int TotalTokens);

public sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, UsageInfo Usage)
{
    /// <summary>vLLM: the prompt's log-probabilities, when <c>prompt_logprobs</c> was asked for.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<Dictionary<string, PromptLogprob>?>? PromptLogprobs { get; init; }
}

public sealed record ChatChoice(int Index, AssistantMessage Message, ChatLogprobs? Logprobs, string? FinishReason);

/// <summary>The answer: text (null when the model only called tools) and the calls.</summary>
public sealed record AssistantMessage(string Role, string? Content)
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<ToolCall>? ToolCalls { get; init; }
}

public sealed record ToolCall(string Id, string Type, FunctionCall Function);

public sealed record FunctionCall(string Name, string Arguments);

/// <summary>A streamed piece of a call: the first has id, type and name; later ones add to the arguments.</summary>
public sealed record ToolCallDelta(int Index)
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Id { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Type { get; init; }

    public FunctionCallDelta Function { get; init; } = new();
}

public sealed record FunctionCallDelta
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Name { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Arguments { get; init; }
}

/// <summary>vLLM's prompt log-probability entry (keyed by token id).</summary>
public sealed record PromptLogprob(double Logprob, int? Rank, string DecodedToken);

public sealed record ChatLogprobs(IReadOnlyList<ChatTokenLogprob> Content);

public sealed record ChatTokenLogprob(string Token, double Logprob, IReadOnlyList<int> Bytes, IReadOnlyList<ChatTopLogprob> TopLogprobs);

public sealed record ChatTopLogprob(string Token, double Logprob, IReadOnlyList<int> Bytes);

public sealed record ChatCompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChunkChoice> Choices)
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public UsageInfo? Usage { get; init; }
}

public sealed record ChatChunkChoice(int Index, ChatDelta Delta, ChatLogprobs? Logprobs, string? FinishReason);

public sealed record ChatDelta
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Role { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Content { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<ToolCallDelta>? ToolCalls { get; init; }
}

public sealed record CompletionResponse(string Id, string Object, long Created, string Model, IReadOnlyList<CompletionChoice> Choices)
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public UsageInfo? Usage { get; init; }
}

public sealed record CompletionChoice(int Index, string Text, CompletionLogprobs? Logprobs, string? FinishReason)
{
    /// <summary>vLLM: the prompt's log-probabilities, when <c>prompt_logprobs</c> was asked for.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<Dictionary<string, PromptLogprob>?>? PromptLogprobs { get; init; }
}

/// <summary>The legacy logprobs shape of <c>/v1/completions</c> (with <c>echo</c>, the first prompt token has null entries, as in OpenAI).</summary>
public sealed record CompletionLogprobs(
    IReadOnlyList<string> Tokens,
    IReadOnlyList<double?> TokenLogprobs,
    IReadOnlyList<Dictionary<string, double>?> TopLogprobs,
    IReadOnlyList<int> TextOffset);

public sealed record ModelList(string Object, IReadOnlyList<ModelCard> Data);

public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, string Root, int MaxModelLen);

/// <summary>Reads <c>stop</c>: a string or a list of strings.</summary>
public sealed class StringOrListConverter : JsonConverter<List<string>>
{
    public override List<string>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null:
                return null;
            case JsonTokenType.String:
                return [reader.GetString()!];
            case JsonTokenType.StartArray:
                var list = new List<string>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (reader.TokenType != JsonTokenType.String)
                    {
                        throw new JsonException("must be a string or a list of strings");
                    }
                    list.Add(reader.GetString()!);
                }
                return list;
            default:
                throw new JsonException("must be a string or a list of strings");
        }
    }

    public override void Write(Utf8JsonWriter writer, List<string> value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, value, options);
}
