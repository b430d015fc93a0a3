using System.Text.Json.Nodes;

namespace RecurFormer.Toolkit.Data;

/// <summary>
/// One line of validation.jsonl: <c>{"kind": "doc", "text"}</c> or <c>{"kind": "qa", "question", "answer", "text"}</c>
/// where a qa text is the whole ChatML conversation (system, user, assistant).
/// </summary>
public sealed record ValidationExample(int Line, string Kind, string Text, string? Question, string? Answer)
{
    public const string Doc = "doc";
    public const string Qa = "qa";

    /// <summary>Reads a validation file; <paramref name="limitPerKind"/> keeps only the first N lines of each kind.</summary>
    public static IReadOnlyList<ValidationExample> ReadAll(JsonlReader reader, int? limitPerKind = null)
    {
        var counts = new Dictionary<string, int>();
        var examples = new List<ValidationExample>();
        foreach (var line in reader.Read(Check))
        {
            var kind = line.Value["kind"]!.GetValue<string>();
            counts[kind] = counts.GetValueOrDefault(kind) + 1;
            if (limitPerKind is { } limit && counts[kind] > limit)
            {
                continue;
            }
            examples.Add(new ValidationExample(line.Number, kind, line.Value["text"]!.GetValue<string>(),
                line.Value["question"]?.GetValue<string>(), line.Value["answer"]?.GetValue<string>()));
        }
        return examples;
    }

    private static string? Check(JsonObject value)
    {
        if (value["text"] is not JsonValue text || !text.TryGetValue<string>(out _))
        {
            return "no \"text\" string";
        }
        var kind = value["kind"] is JsonValue k && k.TryGetValue<string>(out var s) ? s : null;
        if (kind is not (Doc or Qa))
        {
            return "\"kind\" must be \"doc\" or \"qa\"";
        }
        if (kind == Qa && (value["answer"] is not JsonValue answer || !answer.TryGetValue<string>(out _)))
        {
            return "a qa line needs an \"answer\" string";
        }
        return null;
    }
}
