namespace RecurFormer.StructuredOutput;

/// <summary>
/// A schema, regular expression or grammar that cannot be compiled (invalid, unsupported or too large). The message
/// names the offending keyword or position; <see cref="Location"/> is a JSON pointer into a schema when there is one.
/// </summary>
public sealed class StructuredOutputException(string message, string? location = null) : Exception(location is null ? message : $"{message} (at {location})")
{
    public string? Location { get; } = location;
}
