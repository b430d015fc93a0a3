using System.CommandLine;
using RecurFormer.Model.Runtime;

namespace RecurFormer.Cli;

/// <summary>
/// --device, --dtype and --threads, shared by every command that runs a model. For training (<paramref name="training"/>)
/// <c>auto</c> is float32: the optimiser updates the weights in place, and bfloat16 weights would lose small updates.
/// </summary>
public sealed class ComputeOptions(bool training = false)
{
    public Option<string> Device { get; } = new("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
    public Option<string> DType { get; } = new("--dtype")
    {
        Description = training
            ? "Compute dtype: auto (float32, the training precision), float32, bfloat16 or float16."
            : "Compute dtype: auto (bfloat16 on CUDA and on CPUs with bfloat16 instructions, else float32), float32, bfloat16 or float16.",
        DefaultValueFactory = _ => "auto",
    };
    public Option<int?> Threads { get; } = new("--threads") { Description = "CPU threads for tensor operations (default: one per core)." };

    public void AddTo(Command command)
    {
        command.Options.Add(Device);
        command.Options.Add(DType);
        command.Options.Add(Threads);
    }

    /// <param name="threads">libtorch threads when the command decides them (distill's workers share --threads); null: --threads.</param>
    public ComputeTarget Initialize(ParseResult parse, int? threads = null) => TorchRuntime.Initialize(new TorchOptions
    {
        Device = parse.GetValue(Device)!,
        DType = training && parse.GetValue(DType) == "auto" ? "float32" : parse.GetValue(DType)!,
        Threads = threads ?? parse.GetValue(Threads),
    });
}
