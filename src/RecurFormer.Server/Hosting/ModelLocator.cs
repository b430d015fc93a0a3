namespace RecurFormer.Server.Hosting;

/// <summary>
/// Finds files and folders named on the command line or in configuration. A relative path is taken from the
/// working directory; when it is not there (e.g. <c>dotnet run --project</c> started the server elsewhere) the
/// folders above the working directory and above the application are searched, as the default model search does,
/// and the result says which folder was used.
/// </summary>
public static class ModelLocator
{
    /// <summary>Where a path was found, and a note when it was not where the working directory says.</summary>
    public sealed record Found(string FullPath, string? Note);

    /// <summary>The checkpoint folder: the configured path, or the first demo model found near the working directory or the app.</summary>
    public static Found? Resolve(ModelOptions options)
    {
        if (!string.IsNullOrWhiteSpace(options.Path))
        {
            return Find(options.Path, isDirectory: true);
        }
        foreach (var candidate in options.DefaultCandidates)
        {
            if (Find(candidate, isDirectory: true) is { } found && File.Exists(Path.Combine(found.FullPath, "config.json")))
            {
                return found with { Note = null };
            }
        }
        return null;
    }

    /// <summary>A file or folder: as given, else searched upward from the working directory and the application.</summary>
    public static Found? Find(string path, bool isDirectory)
    {
        bool Exists(string candidate) => isDirectory ? Directory.Exists(candidate) : File.Exists(candidate);
        if (Path.IsPathRooted(path))
        {
            return Exists(path) ? new Found(Path.GetFullPath(path), null) : null;
        }
        var here = Path.GetFullPath(path);
        if (Exists(here))
        {
            return new Found(here, null);
        }
        foreach (var root in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(root).Parent; dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, path);
                if (Exists(candidate))
                {
                    return new Found(Path.GetFullPath(candidate), $"'{path}' is not under the working directory {Directory.GetCurrentDirectory()}; using {Path.GetFullPath(candidate)} (found in {dir.FullName})");
                }
            }
        }
        return null;
    }
}
