using RecurFormer.Server.Hosting;

// `dotnet run -c Release --project src/RecurFormer.Server` serves the demo model on http://127.0.0.1:8000.
// Configuration: appsettings.json, RECURFORMER__* environment variables, command-line flags (docs/server.md).
var app = ServerApplication.Build(args);
await app.RunAsync();
