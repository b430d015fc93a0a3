using Microsoft.Extensions.Options;
using RecurFormer.Server.Hosting;

// `dotnet run -c Release --project src/RecurFormer.Server` serves the demo model on http://127.0.0.1:8000.
// Configuration: appsettings.json, RECURFORMER__* environment variables, command-line flags (docs/server.md).
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
