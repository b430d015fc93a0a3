using System.Text.Json;
using RecurFormer.Server.Errors;
using RecurFormer.StructuredOutput;
using RecurFormer.StructuredOutput.Grammars;

namespace RecurFormer.Server.Constraints;

/// <summary>
/// What a request asks its output to be: the grammar (built on demand), the key it is cached under, and the field
/// it came from (for error messages). Read from OpenAI's <c>response_format</c> and vLLM's <c>guided_*</c> fields
/// (and their newer <c>structured_outputs</c> object); at most one may be given.
/// </summary>
public sealed record OutputFormat(string Key, Func<GrammarDefinition> Build, string Param)
{
    /// <summary>Largest schema, pattern or grammar accepted, in characters of its JSON: beyond it compiling is the client's denial of service.</summary>
    public const int MaxSpecificationChars = 128 * 1024;

    public static OutputFormat? FromRequest(OpenAi.GenerationRequestBase request)
    {
        var found = new List<OutputFormat>();
        if (request.ResponseFormat is { ValueKind: not (JsonValueKind.Null or JsonValueKind.Undefined) } responseFormat && ResponseFormat(responseFormat) is { } fromResponseFormat)
        {
            found.Add(fromResponseFormat);
        }
        if (request.GuidedJson is { ValueKind: not (JsonValueKind.Null or JsonValueKind.Undefined) } guidedJson)
        {
            found.Add(Json(guidedJson, "guided_json"));
        }
        if (request.GuidedRegex is { } regex)
        {
            found.Add(Regex(regex, "guided_regex"));
        }
        if (request.GuidedChoice is { } choice)
        {
            found.Add(Choice(choice, "guided_choice"));
        }
        if (request.GuidedGrammar is { } grammar)
        {
            found.Add(Grammar(grammar, "guided_grammar"));
        }
        if (request.StructuredOutputs is { ValueKind: JsonValueKind.Object } structured)
        {
            found.AddRange(StructuredOutputs(structured));
        }
        if (request.GuidedWhitespacePattern is not null)
        {
            throw ApiException.BadRequest("'guided_whitespace_pattern' is not supported: JSON output allows no whitespace, one space, or a newline and up to 20 spaces between tokens", "guided_whitespace_pattern", "unsupported_parameter");
        }
        if (found.Count > 1)
        {
            throw ApiException.BadRequest($"give one kind of structured output, not several ({string.Join(", ", found.Select(f => f.Param))})", found[1].Param);
        }
        return found.FirstOrDefault();
    }

    private static OutputFormat? ResponseFormat(JsonElement format)
    {
        const string param = "response_format";
        if (format.ValueKind != JsonValueKind.Object || !format.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
        {
            throw ApiException.BadRequest("'response_format' must be an object with a 'type' (text, json_object or json_schema)", param);
        }
        switch (type.GetString())
        {
            case "text":
                return null;
            case "json_object":
                return new OutputFormat("json_object", OutputGrammars.JsonObject, param);
            case "json_schema":
                if (!format.TryGetProperty("json_schema", out var spec) || spec.ValueKind != JsonValueKind.Object)
                {
                    throw ApiException.BadRequest("'response_format.json_schema' is required for type json_schema", "response_format.json_schema");
                }
                if (!spec.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || !ValidName(name.GetString()!))
                {
                    throw ApiException.BadRequest("'response_format.json_schema.name' must be 1 to 64 letters, digits, underscores or dashes", "response_format.json_schema.name");
                }
                if (!spec.TryGetProperty("schema", out var schema) || schema.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
                {
                    // OpenAI allows an omitted schema: then any JSON object.
                    return new OutputFormat("json_object", OutputGrammars.JsonObject, param);
                }
                // 'strict' changes nothing here: output is always constrained, and keywords that cannot be enforced are refused either way.
                return Json(schema, "response_format.json_schema.schema");
            default:
                throw ApiException.BadRequest($"'response_format.type' must be text, json_object or json_schema, got '{type.GetString()}'", "response_format.type");
        }
    }

    private static IEnumerable<OutputFormat> StructuredOutputs(JsonElement structured)
    {
        foreach (var property in structured.EnumerateObject())
        {
            var param = $"structured_outputs.{property.Name}";
            switch (property.Name)
            {
                case "json" when property.Value.ValueKind is not JsonValueKind.Null:
                    yield return Json(property.Value, param);
                    break;
                case "json_object" when property.Value.ValueKind == JsonValueKind.True:
                    yield return new OutputFormat("json_object", OutputGrammars.JsonObject, param);
                    break;
                case "regex" when property.Value.ValueKind == JsonValueKind.String:
                    yield return Regex(property.Value.GetString()!, param);
                    break;
                case "choice" when property.Value.ValueKind == JsonValueKind.Array:
                    yield return Choice(property.Value.EnumerateArray().Select(c => c.ValueKind == JsonValueKind.String ? c.GetString()! : throw ApiException.BadRequest($"'{param}' must be a list of strings", param)).ToList(), param);
                    break;
                case "grammar" when property.Value.ValueKind == JsonValueKind.String:
                    yield return Grammar(property.Value.GetString()!, param);
                    break;
                case "json" or "json_object" or "regex" or "choice" or "grammar" or "disable_any_whitespace" or "disable_fallback" or "disable_additional_properties" or "whitespace_pattern" or "structural_tag":
                    if (property.Name is "whitespace_pattern" or "structural_tag" && property.Value.ValueKind != JsonValueKind.Null)
                    {
                        throw ApiException.BadRequest($"'{param}' is not supported", param, "unsupported_parameter");
                    }
                    break;
                default:
                    throw ApiException.BadRequest($"'{param}' is not a structured output kind (json, json_object, regex, choice, grammar)", param);
            }
        }
    }

    private static OutputFormat Json(JsonElement schema, string param)
    {
        // vLLM's guided_json may be the schema as a JSON string.
        if (schema.ValueKind == JsonValueKind.String)
        {
            try
            {
                schema = JsonDocument.Parse(schema.GetString()!).RootElement.Clone();
            }
            catch (JsonException error)
            {
                throw ApiException.BadRequest($"'{param}' is a string that is not JSON: {error.Message}", param, "invalid_schema");
            }
        }
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True or JsonValueKind.False))
        {
            throw ApiException.BadRequest($"'{param}' must be a JSON Schema (an object)", param, "invalid_schema");
        }
        var text = schema.GetRawText();
        CheckSize(text, param);
        var copy = schema.Clone();
        return new OutputFormat("json:" + text, () => OutputGrammars.JsonSchema(copy), param);
    }

    private static OutputFormat Regex(string pattern, string param)
    {
        CheckSize(pattern, param);
        return new OutputFormat("regex:" + pattern, () => OutputGrammars.Regex(pattern), param);
    }

    private static OutputFormat Choice(IReadOnlyList<string> choices, string param)
    {
        if (choices.Count == 0)
        {
            throw ApiException.BadRequest($"'{param}' must not be empty", param);
        }
        var key = JsonSerializer.Serialize(choices);
        CheckSize(key, param);
        return new OutputFormat("choice:" + key, () => OutputGrammars.Choice(choices), param);
    }

    private static OutputFormat Grammar(string grammar, string param)
    {
        CheckSize(grammar, param);
        return new OutputFormat("gbnf:" + grammar, () => OutputGrammars.Gbnf(grammar), param);
    }

    private static void CheckSize(string text, string param)
    {
        if (text.Length > MaxSpecificationChars)
        {
            throw ApiException.BadRequest($"'{param}' is {text.Length:N0} characters long; at most {MaxSpecificationChars:N0} are accepted", param, "schema_too_large");
        }
    }

    private static bool ValidName(string name) => name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-');

    /// <summary>The error a client sees when its schema, pattern or grammar does not compile.</summary>
    public static ApiException Refusal(StructuredOutputException error, string param) =>
        ApiException.BadRequest($"'{param}' cannot be used for structured output: {error.Message}", param, param.Contains("grammar") ? "invalid_grammar" : param.Contains("regex") ? "invalid_regex" : "invalid_schema");
}
