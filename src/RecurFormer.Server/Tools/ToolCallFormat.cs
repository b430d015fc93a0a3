namespace RecurFormer.Server.Tools;

/// <summary>
/// How a model family writes tool calls (vLLM's <c>--tool-call-parser</c> names): what opens and closes a call, whether
/// calls come as one JSON array, and the key of the arguments. The same description drives parsing the output and
/// the grammar that forces calls for <c>tool_choice</c> <c>required</c> or a named function.
/// </summary>
public sealed record ToolCallFormat(
    string Name,
    string? Marker,
    string? Closer,
    bool CallsInArray,
    bool OnlyAtStart,
    string? Separator,
    string ArgumentsKey)
{
    /// <summary>Hermes / Qwen2.5 / Qwen3: <c>&lt;tool_call&gt;\n{"name": …, "arguments": {…}}\n&lt;/tool_call&gt;</c>, one block per call.</summary>
    public static readonly ToolCallFormat Hermes = new("hermes", "<tool_call>", "</tool_call>", CallsInArray: false, OnlyAtStart: false, Separator: null, "arguments");

    /// <summary>Llama 3.1/3.2/3.3 JSON tool calling: the answer is <c>{"name": …, "parameters": {…}}</c> (calls joined by <c>; </c>), optionally after <c>&lt;|python_tag|&gt;</c>.</summary>
    public static readonly ToolCallFormat Llama3Json = new("llama3_json", "<|python_tag|>", null, CallsInArray: false, OnlyAtStart: true, Separator: ";", "parameters");

    /// <summary>Mistral: <c>[TOOL_CALLS][{"name": …, "arguments": {…}}, …]</c>.</summary>
    public static readonly ToolCallFormat Mistral = new("mistral", "[TOOL_CALLS]", null, CallsInArray: true, OnlyAtStart: false, Separator: ",", "arguments");

    public static IReadOnlyList<ToolCallFormat> All { get; } = [Hermes, Llama3Json, Mistral];

    /// <summary>Accepted <c>--tool-call-parser</c> values.</summary>
    public static string Names => string.Join(", ", All.Select(f => f.Name));

    public static ToolCallFormat? ByName(string name) => All.FirstOrDefault(f => string.Equals(f.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The format a chat template teaches its model, when the template says so unambiguously (it writes exactly one
    /// family's marker); null otherwise.
    /// </summary>
    public static ToolCallFormat? Detect(string? templateSource)
    {
        if (string.IsNullOrEmpty(templateSource))
        {
            return null;
        }
        var found = new List<ToolCallFormat>();
        if (templateSource.Contains("<tool_call>", StringComparison.Ordinal))
        {
            found.Add(Hermes);
        }
        if (templateSource.Contains("[TOOL_CALLS]", StringComparison.Ordinal))
        {
            found.Add(Mistral);
        }
        if (templateSource.Contains("<|python_tag|>", StringComparison.Ordinal) || templateSource.Contains("\"parameters\": dictionary of argument name", StringComparison.Ordinal))
        {
            found.Add(Llama3Json);
        }
        return found.Count == 1 ? found[0] : null;
    }

    /// <summary>A new call id: Mistral's templates require nine alphanumeric characters; others get OpenAI's <c>call_</c> form.</summary>
    public string NewCallId()
    {
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        var length = this == Mistral ? 9 : 24;
        var id = string.Create(length, 0, (span, _) =>
        {
            for (var i = 0; i < span.Length; i++)
            {
                span[i] = alphabet[System.Security.Cryptography.RandomNumberGenerator.GetInt32(alphabet.Length)];
            }
        });
        return this == Mistral ? id : "call_" + id;
    }
}
