using System.Diagnostics;
using System.Text;

namespace RecurFormer.Cli.Tests;

/// <summary>Runs the real `recurformer` command (dotnet recurformer.dll ...) and captures what it prints.</summary>
public static class CliProcess
{
    public static string RepositoryRoot { get; } = FindRoot();

    public sealed record Output(int ExitCode, string Stdout, string Stderr);

    public static async Task<Output> Run(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = RepositoryRoot,
            StandardOutputEncoding = new UTF8Encoding(false),
            StandardErrorEncoding = new UTF8Encoding(false),
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "recurformer.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return new Output(process.ExitCode, await stdout, await stderr);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RecurFormer.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("RecurFormer.sln not found");
    }
}
