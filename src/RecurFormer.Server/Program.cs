using Microsoft.Extensions.Options;
using RecurFormer.Server.CommandLine;
using RecurFormer.Server.Hosting;

// `dotnet run -c Release --project src/RecurFormer.Server [-- serve MODEL --option value ...]` serves a model (the demo
// model by default) on http://127.0.0.1:8000. Options: --help, and docs/server.md (each is also a RECURFORMER__* variable).
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
