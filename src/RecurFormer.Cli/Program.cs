using System.CommandLine;
using RecurFormer.Cli;
using RecurFormer.Cli.Commands;
using RecurFormer.Server.CommandLine;
using RecurFormer.Server.Hosting;

// `recurformer serve MODEL ...` is the server itself (as `vllm serve`): its own command line, help and errors.
if (args.Length > 0 && args[0] == "serve")
{
    return await ServerMain.RunAsync(args);
}

// The `recurformer` command: one sub-command per file in Commands/. Each sub-command throws UserError (or a
// library's own error type, translated in CliErrors) for bad input; this is the one place that turns errors into
// a single line on stderr and an exit code.
var root = new RootCommand("RecurFormer: analyse, convert, distill, evaluate and run hybrid attention/Mamba LLMs.");
root.Options.Add(CommonOptions.Verbose);
foreach (var command in new[] { ServerCommandLine.CreateServeCommand(), GenerateCommand.Create(), TemplateCommand.Create(), AnalyzeCommand.Create(), ConvertCommand.Create(), DistillCommand.Create(), EvalCommand.Create(), BenchCommand.Create(), BenchStepCommand.Create(), BenchProductsCommand.Create(), BenchHttpCommand.Create() })
{
    root.Subcommands.Add(command);
}

var parse = root.Parse(args);
try
{
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception error)
{
    return CliErrors.Report(error, parse.GetValue(CommonOptions.Verbose));
}
