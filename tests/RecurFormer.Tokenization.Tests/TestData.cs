using System.Text.Json;

namespace RecurFormer.Tokenization.Tests;

/// <summary>Where the test inputs are: the demo checkpoint in the repository's models/ and the Data folder next to the tests.</summary>
internal static class TestData
{
    public static string RepositoryRoot { get; } = FindRepositoryRoot();

    public static string DemoModelFolder => Path.Combine(RepositoryRoot, "models", "dotnet-docs-qwen2-16m");

    public static string DataFolder => Path.Combine(AppContext.BaseDirectory, "Data");

    public static string SentencePieceFolder => Path.Combine(DataFolder, "sentencepiece-tiny");

    private static readonly Lazy<CheckpointTokenizer> DemoTokenizerInstance = new(() => CheckpointTokenizer.FromPretrained(DemoModelFolder));

    /// <summary>The demo model's tokenizer, loaded once for all tests (it is immutable).</summary>
    public static CheckpointTokenizer DemoTokenizer => DemoTokenizerInstance.Value;

    /// <summary>The "text" of every line of validation.jsonl (held-out .NET docs and ChatML Q/A pairs).</summary>
    public static IReadOnlyList<string> ValidationTexts { get; } = File.ReadLines(Path.Combine(DataFolder, "validation.jsonl"))
        .Where(line => line.Length > 0)
        .Select(line => JsonDocument.Parse(line).RootElement.GetProperty("text").GetString()!)
        .ToList();

    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "models", "dotnet-docs-qwen2-16m")))
                return dir.FullName;
        throw new DirectoryNotFoundException("models/dotnet-docs-qwen2-16m not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>A scratch folder under the temp directory, deleted when the test ends.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "recurformer-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Copies files of the demo model into this folder.</summary>
    public TempFolder WithDemoFiles(params string[] names)
    {
        foreach (var name in names)
            System.IO.File.Copy(System.IO.Path.Combine(TestData.DemoModelFolder, name), File(name));
        return this;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
