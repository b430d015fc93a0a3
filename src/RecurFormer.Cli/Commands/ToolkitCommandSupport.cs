using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Toolkit.Analysis;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Data;

namespace RecurFormer.Cli.Commands;

/// <summary>What the toolkit commands (analyze, convert, distill, eval) share: options, error translation, JSON output.</summary>
internal static class ToolkitCommandSupport
{
    public static Option<bool> Force() => new("--force") { Description = "Overwrite the output folder if it exists." };

    public static Option<string> OnBadLine() => new("--on-bad-line")
    {
        Description = "What to do with a malformed data line: stop (default; the error names the line) or skip (each skipped line is reported).",
        DefaultValueFactory = _ => "stop",
    };

    public static MalformedLines Policy(string value) => value.ToLowerInvariant() switch
    {
        "stop" => MalformedLines.Stop,
        "skip" => MalformedLines.Skip,
        _ => throw new UserError($"--on-bad-line must be stop or skip, not '{value}'"),
    };

    /// <summary>Prints the lines a reader skipped, so that skipping is never silent.</summary>
    public static void ReportSkipped(JsonlReader reader)
    {
        foreach (var problem in reader.Skipped.Take(20))
        {
            Console.Error.WriteLine($"warning: skipped {problem.Message}");
        }
        if (reader.Skipped.Count > 0)
        {
            Console.Error.WriteLine($"warning: skipped {reader.Skipped.Count} malformed line(s) of {reader.Path}");
        }
    }

    public static int[] IntList(string text, string option)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out values[i]) || values[i] < 1)
            {
                throw new UserError($"{option}: '{parts[i]}' is not a positive integer");
            }
        }
        return values.Length > 0 ? values : throw new UserError($"{option} is empty");
    }

    public static void RequireFolder(string folder, string option)
    {
        if (!Directory.Exists(folder))
        {
            throw new UserError($"{option} {folder}: folder not found");
        }
    }

    public static void RequireFile(string path, string option)
    {
        if (!File.Exists(path))
        {
            throw new UserError($"{option} {path}: file not found");
        }
    }

    /// <summary>Runs a command body, turning the toolkit's input errors into one-line user errors.</summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception error) when (error is AnalysisFileException or DataFormatException or OutputExistsException)
        {
            throw new UserError(error.Message);
        }
    }

    public static string Json(JsonNode node) => node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    public static void WriteJson(string path, JsonNode node)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null)
        {
            Directory.CreateDirectory(folder);
        }
        File.WriteAllText(path, Json(node) + "\n");
    }
}
