using System.CommandLine;
using RecurFormer.Model.Runtime;

namespace RecurFormer.Cli;

/// <summary>--device, --dtype and --threads, shared by every command that runs a model.</summary>
public sealed class ComputeOptions
{
    public Option<string> Device { get; } = new("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
    public Option<string> DType { get; } = new("--dtype") { Description = "Compute dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16.", DefaultValueFactory = _ => "auto" };
    public Option<int?> Threads { get; } = new("--threads") { Description = "CPU threads for tensor operations (default: one per core)." };

    public void AddTo(Command command)
    {
        command.Options.Add(Device);
        command.Options.Add(DType);
        command.Options.Add(Threads);
    }

    public ComputeTarget Initialize(ParseResult parse) => TorchRuntime.Initialize(new TorchOptions
    {
        Device = parse.GetValue(Device)!,
        DType = parse.GetValue(DType)!,
        Threads = parse.GetValue(Threads),
    });
}
