using Microsoft.Extensions.Options;
using RecurFormer.Server.CommandLine;

namespace RecurFormer.Server.Hosting;

/// <summary>
/// The server's entry point, shared by its own executable (<c>dotnet run --project src/RecurFormer.Server -- …</c>)
/// and by <c>recurformer serve MODEL …</c>: the same command line, help and one-line errors either way.
/// </summary>
public static class ServerMain
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (ServerCommandLine.HandleHelpOrErrors(ServerCommandLine.Parse(args), Console.Out, Console.Error) is { } exitCode)
        {
            return exitCode;
        }
        try
        {
            var app = ServerApplication.Build(args);
            await app.RunAsync();
            return 0;
        }
        catch (OptionsValidationException invalid)
        {
            // A configuration mistake (a model folder that does not exist, a bad limit) is one line, not a stack trace.
            Console.Error.WriteLine($"error: invalid configuration: {string.Join("; ", invalid.Failures)}");
            return 1;
        }
    }
}
