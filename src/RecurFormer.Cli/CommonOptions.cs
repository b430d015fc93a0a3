using System.CommandLine;

namespace RecurFormer.Cli;

/// <summary>Options shared by several commands.</summary>
public static class CommonOptions
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Print the full stack trace of an error.",
        Recursive = true,
    };
}
