using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Runtime;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>Paths of the fixtures and models committed in the repository, and their reference tensors.</summary>
public static class TestData
{
    public static string RepositoryRoot { get; } = FindRoot();

    public static string Fixture(string name) => Path.Combine(RepositoryRoot, "tests", "fixtures", name);
    public static string DemoTeacher => Path.Combine(RepositoryRoot, "models", "dotnet-docs-qwen2-16m");

    public const string SystemMessage = "You are a concise assistant that explains .NET APIs.";
    public const string ReferenceQuestion = "Explain System.Threading.CancellationToken.Equals.";
    public const string ReferenceAnswer =
        "Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object. It returns true if the specified object is equal to the current instance; otherwise, false.";

    /// <summary>In float32: these tests pin the model to references (bfloat16 is the CPU default where it is faster).</summary>
    public static ICausalLM Load(string folder) => CausalLMLoader.FromPretrained(folder, TorchRuntime.Initialize(new TorchOptions { DType = "float32" }));

    /// <summary>Reads one tensor of a folder's reference.safetensors as float32 (or int64 for ids) on the CPU.</summary>
    public static Tensor Reference(string folder, string name)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(folder, "reference.safetensors"));
        return file.Load(name);
    }

    public static long[] ReferenceIds(string folder, string name)
    {
        using var ids = Reference(folder, name);
        return ids.data<long>().ToArray();
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
        throw new InvalidOperationException("RecurFormer.sln not found above " + AppContext.BaseDirectory);
    }
}
