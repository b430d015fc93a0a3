using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Toolkit.Analysis;
using RecurFormer.Toolkit.Conversion;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

/// <summary>Fixtures of the repository and small helpers shared by the toolkit tests.</summary>
public static class TestData
{
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>libtorch must be loaded (by the project's loader) before the first tensor; test classes call this first.</summary>
    public static void EnsureTorch() => TorchRuntime.EnsureLoaded();

    public static string Fixture(string name) => Path.Combine(RepositoryRoot, "tests", "fixtures", name);
    public static string QwenTiny => Fixture("qwen2-tiny");

    public static ICausalLM Load(string folder) => CausalLMLoader.FromPretrained(folder, TorchRuntime.Initialize(new TorchOptions { Threads = 2 }));

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

    public static Tensor AllLogits(ICausalLM model, long[] ids)
    {
        using var cache = model.CreateCache(ids.Length);
        return model.Forward(new ForwardBatch([ids], cache.Sequences) { AllLogits = true });
    }

    /// <summary>A recency report for qwen2-tiny (3 layers, 8 heads, 2 groups) where group g of layer l has ratio (l·2 + g + 1)/10.</summary>
    public static RecencyReport TinyReport() => new()
    {
        SourceModel = "qwen2-tiny",
        Layers = 3,
        Heads = 8,
        KvGroups = 2,
        Windows = [4],
        Warmup = 0,
        SequenceLength = 0,
        Samples = 0,
        ByLayerHeadWindow = Enumerable.Range(0, 3).Select(l => Enumerable.Range(0, 8).Select(h => new[] { (l * 2 + h / 4 + 1) / 10.0 }).ToArray()).ToArray(),
        ByLayerGroupWindow = Enumerable.Range(0, 3).Select(l => Enumerable.Range(0, 2).Select(g => new[] { (l * 2 + g + 1) / 10.0 }).ToArray()).ToArray(),
    };

    /// <summary>Converts qwen2-tiny with the given groups (layer, group) into a new temporary folder.</summary>
    public static string Convert(TemporaryFolder temp, ReplacementKind kind, IEnumerable<(int Layer, int Group)> groups, WindowSpec? window = null, MambaSpec? mamba = null, string name = "student")
    {
        var folder = temp.Sub(name);
        var plan = new ConversionPlan(kind, groups.Select(g => new GroupChoice(g.Layer, g.Group, 1)).ToArray(), window ?? new WindowSpec(64, 4), mamba ?? new MambaSpec(2, 8, 4, null), Seed: 7);
        Converter.Convert(QwenTiny, plan, folder);
        return folder;
    }

    /// <summary>Overwrites the given tensors of a checkpoint folder (e.g. to give an untrained mixer non-zero outputs).</summary>
    public static void Patch(string folder, Func<string, Tensor, Tensor?> change)
    {
        var path = Path.Combine(folder, "model.safetensors");
        Dictionary<string, Tensor> tensors;
        using (var file = SafeTensorsFile.Open(path))
        {
            tensors = file.Tensors.Keys.ToDictionary(n => n, n => file.Load(n));
        }
        foreach (var name in tensors.Keys.ToArray())
        {
            if (change(name, tensors[name]) is { } replaced)
            {
                tensors[name] = replaced;
            }
        }
        SafeTensorsWriter.Write(path, tensors);
    }

    public static JsonObject Config(string folder) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();

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

/// <summary>A temporary folder deleted with the test class.</summary>
public sealed class TemporaryFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("recurformer-toolkit-").FullName;

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
