using System.Text.Json;
using System.Text.RegularExpressions;
using RecurFormer.Server.Errors;

namespace RecurFormer.Server.Tools;

public enum ToolChoiceMode { None, Auto, Required, Named }

/// <summary>A function the model may call: its name, description and parameters schema (null = no parameters).</summary>
public sealed record FunctionTool(string Name, string? Description, JsonElement? Parameters);

/// <summary>
/// The validated <c>tools</c>, <c>tool_choice</c> and <c>parallel_tool_calls</c> of a chat request (OpenAI's rules:
/// function names of 1–64 letters, digits, _ or -, unique; <c>tool_choice</c> naming a tool that exists;
/// <c>required</c> or a named function only with tools).
/// </summary>
public sealed partial record ToolRequest(IReadOnlyList<FunctionTool> Functions, ToolChoiceMode Choice, string? NamedFunction, bool ParallelToolCalls, JsonElement ToolsJson)
{
    [GeneratedRegex("^[a-zA-Z0-9_-]{1,64}$")]
    private static partial Regex FunctionName();

    /// <summary>Null when the request has no tools and no tool choice.</summary>
    public static ToolRequest? FromRequest(JsonElement? tools, JsonElement? toolChoice, bool? parallelToolCalls)
    {
        var functions = new List<FunctionTool>();
        var hasTools = tools is { ValueKind: not (JsonValueKind.Null or JsonValueKind.Undefined) } list;
        if (hasTools)
        {
            if (tools!.Value.ValueKind != JsonValueKind.Array)
            {
                throw ApiException.BadRequest("'tools' must be an array of {\"type\":\"function\",\"function\":{...}}", "tools");
            }
            if (tools.Value.GetRawText().Length > Constraints.OutputFormat.MaxSpecificationChars)
            {
                throw ApiException.BadRequest($"'tools' is {tools.Value.GetRawText().Length:N0} characters long; at most {Constraints.OutputFormat.MaxSpecificationChars:N0} are accepted", "tools", "schema_too_large");
            }
            var i = 0;
            foreach (var tool in tools.Value.EnumerateArray())
            {
                functions.Add(Function(tool, $"tools[{i}]"));
                i++;
            }
            var duplicate = functions.GroupBy(f => f.Name).FirstOrDefault(g => g.Count() > 1);
            if (duplicate is not null)
            {
                throw ApiException.BadRequest($"the function name '{duplicate.Key}' appears more than once in 'tools'", "tools");
            }
        }
        var (mode, named) = ParseChoice(toolChoice, functions.Count > 0);
        if (mode == ToolChoiceMode.Named && functions.All(f => f.Name != named))
        {
            throw ApiException.BadRequest($"'tool_choice' names the function '{named}', which is not in 'tools' ({string.Join(", ", functions.Select(f => f.Name))})", "tool_choice");
        }
        if (functions.Count == 0 && mode is ToolChoiceMode.Required or ToolChoiceMode.Named)
        {
            throw ApiException.BadRequest("'tool_choice' requires a tool call, but 'tools' is empty or missing", "tool_choice");
        }
        if (functions.Count == 0 && toolChoice is null)
        {
            return null;
        }
        return new ToolRequest(functions, functions.Count == 0 ? ToolChoiceMode.None : mode, named, parallelToolCalls ?? true,
            hasTools ? tools!.Value : JsonSerializer.SerializeToElement(Array.Empty<object>()));
    }

    private static FunctionTool Function(JsonElement tool, string path)
    {
        if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
        {
            throw ApiException.BadRequest($"'{path}' must be an object with \"type\": \"function\"", path);
        }
        if (!type.ValueEquals("function"))
        {
            throw ApiException.BadRequest($"'{path}.type' must be \"function\" (the only tool type this server runs), got \"{type.GetString()}\"", $"{path}.type", "unsupported_parameter");
        }
        if (!tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
        {
            throw ApiException.BadRequest($"'{path}.function' is required", $"{path}.function");
        }
        if (!function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || !FunctionName().IsMatch(name.GetString()!))
        {
            throw ApiException.BadRequest($"'{path}.function.name' must be 1 to 64 letters, digits, underscores or dashes", $"{path}.function.name");
        }
        string? description = null;
        if (function.TryGetProperty("description", out var text) && text.ValueKind == JsonValueKind.String)
        {
            description = text.GetString();
        }
        JsonElement? parameters = null;
        if (function.TryGetProperty("parameters", out var schema) && schema.ValueKind != JsonValueKind.Null)
        {
            if (schema.ValueKind != JsonValueKind.Object)
            {
                throw ApiException.BadRequest($"'{path}.function.parameters' must be a JSON Schema object", $"{path}.function.parameters", "invalid_schema");
            }
            if (schema.TryGetProperty("type", out var kind) && !(kind.ValueKind == JsonValueKind.String && kind.ValueEquals("object")))
            {
                throw ApiException.BadRequest($"'{path}.function.parameters' must describe an object (\"type\": \"object\")", $"{path}.function.parameters", "invalid_schema");
            }
            parameters = schema;
        }
        return new FunctionTool(name.GetString()!, description, parameters);
    }

    private static (ToolChoiceMode, string?) ParseChoice(JsonElement? choice, bool hasTools)
    {
        if (choice is not { } value || value.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
        {
            return (hasTools ? ToolChoiceMode.Auto : ToolChoiceMode.None, null);
        }
        if (value.ValueKind == JsonValueKind.String)
        {
            return value.GetString() switch
            {
                "none" => (ToolChoiceMode.None, null),
                "auto" => (ToolChoiceMode.Auto, null),
                "required" => (ToolChoiceMode.Required, null),
                var other => throw ApiException.BadRequest($"'tool_choice' must be \"none\", \"auto\", \"required\" or {{\"type\":\"function\",\"function\":{{\"name\":...}}}}, got \"{other}\"", "tool_choice"),
            };
        }
        if (value.ValueKind == JsonValueKind.Object && value.TryGetProperty("function", out var function) && function.ValueKind == JsonValueKind.Object
            && function.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String)
        {
            return (ToolChoiceMode.Named, name.GetString());
        }
        throw ApiException.BadRequest("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}", "tool_choice");
    }
}
