using RecurFormer.Server.Hosting;

// `dotnet run -c Release --project src/RecurFormer.Server [-- serve MODEL --option value ...]` serves a model (the demo
// model by default) on http://127.0.0.1:8000; `recurformer serve MODEL ...` is the same. Options: --help, and
// docs/server.md (each is also a RECURFORMER__* variable).
return await ServerMain.RunAsync(args);
