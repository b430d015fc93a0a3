using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpCompress.Compressors.Xz;

namespace RecurFormer.Toolkit.Data;

/// <summary>What to do with a line that is not a JSON object with the fields a reader needs.</summary>
public enum MalformedLines
{
    /// <summary>Stop at the first one with a <see cref="DataFormatException"/> naming the file and the line.</summary>
    Stop,

    /// <summary>Skip it, and report it in <see cref="JsonlReader.Skipped"/> (the commands print them).</summary>
    Skip,
}

/// <summary>A malformed line of a data file, with its 1-based line number.</summary>
public sealed class DataFormatException(string path, int line, string problem)
    : Exception($"{path}:{line}: {problem}")
{
    public string Path { get; } = path;
    public int Line { get; } = line;
    public string Problem { get; } = problem;
}

/// <summary>One line of a JSON-lines file.</summary>
public sealed record JsonlLine(int Number, JsonObject Value);

/// <summary>
/// Reads JSON-lines files, plain or xz-compressed (<c>.xz</c>, decoded by SharpCompress's managed decoder).
/// Blank lines are ignored; every other line must be a JSON object and pass the caller's check.
/// </summary>
public sealed class JsonlReader(string path, MalformedLines policy = MalformedLines.Stop)
{
    private readonly List<DataFormatException> _skipped = [];

    public string Path { get; } = path;

    /// <summary>Lines skipped so far (only with <see cref="MalformedLines.Skip"/>).</summary>
    public IReadOnlyList<DataFormatException> Skipped => _skipped;

    /// <summary>The lines that parse and for which <paramref name="check"/> returns null (else the problem).</summary>
    public IEnumerable<JsonlLine> Read(Func<JsonObject, string?>? check = null)
    {
        if (!File.Exists(Path))
        {
            throw new FileNotFoundException($"{Path}: file not found", Path);
        }
        using var reader = new StreamReader(Open(Path), new UTF8Encoding(false, throwOnInvalidBytes: true));
        var number = 0;
        while (true)
        {
            string? text;
            try
            {
                text = reader.ReadLine();
            }
            catch (Exception error) when (error is DecoderFallbackException or IOException or InvalidDataException or InvalidOperationException)
            {
                throw new DataFormatException(Path, number + 1, $"cannot be read ({error.Message})");
            }
            if (text is null)
            {
                yield break;
            }
            number++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }
            var (value, problem) = Parse(text, check);
            if (problem is null)
            {
                yield return new JsonlLine(number, value!);
                continue;
            }
            var failure = new DataFormatException(Path, number, problem);
            if (policy == MalformedLines.Stop)
            {
                throw failure;
            }
            _skipped.Add(failure);
        }
    }

    /// <summary>The <c>text</c> field of every line: the training-text format.</summary>
    public IEnumerable<(int Line, string Text)> ReadTexts() =>
        Read(o => o["text"] is JsonValue v && v.TryGetValue<string>(out _) ? null : "no \"text\" string").Select(l => (l.Number, l.Value["text"]!.GetValue<string>()));

    private static (JsonObject? Value, string? Problem) Parse(string text, Func<JsonObject, string?>? check)
    {
        try
        {
            if (JsonNode.Parse(text) is not JsonObject value)
            {
                return (null, "not a JSON object");
            }
            return (value, check?.Invoke(value));
        }
        catch (JsonException error)
        {
            return (null, $"invalid JSON ({error.Message})");
        }
    }

    private static Stream Open(string path)
    {
        Stream file = File.OpenRead(path);
        return path.EndsWith(".xz", StringComparison.OrdinalIgnoreCase) ? new XZStream(file) : file;
    }
}
