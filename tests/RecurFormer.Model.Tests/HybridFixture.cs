using System.Text.Json.Nodes;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>
/// A hybrid checkpoint made from a fixture for tests: some KV groups of some layers Mamba (random mixer weights,
/// large enough to matter), some windowed, the rest full. q/k/v keep only the attending groups, as a conversion
/// writes them.
/// </summary>
public sealed class HybridFixture : IDisposable
{
    public HybridFixture(string fixture, IReadOnlyList<LayerReplacement> layers, WindowSpec window, int seed = 7, MambaSpec? mamba = null)
    {
        Folder = Directory.CreateTempSubdirectory("recurformer-hybrid-").FullName;
        var source = TestData.Fixture(fixture);
        foreach (var file in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
        {
            File.Copy(file, Path.Combine(Folder, Path.GetFileName(file)));
        }
        var raw = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        var layout = new HybridLayout { Layers = layers, Window = window, Mamba = mamba ?? new MambaSpec(2, 8, 4, null) };
        raw["recurformer"] = layout.ToJson();
        File.WriteAllText(Path.Combine(Folder, "config.json"), raw.ToJsonString());
        var config = (TransformerConfig)ModelConfig.Load(Folder);

        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        using var weights = SafeTensorsFile.Open(Path.Combine(source, "model.safetensors"));
        var tensors = weights.Tensors.Keys.ToDictionary(name => name, name => weights.Load(name));
        for (var layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            var heads = config.Heads(layer);
            var prefix = $"model.layers.{layer}.self_attn";
            Keep(tensors, $"{prefix}.q_proj", Rows(heads.HeadsOf(heads.AttendingGroups), config.HeadDim));
            Keep(tensors, $"{prefix}.k_proj", Rows(heads.AttendingGroups, config.HeadDim));
            Keep(tensors, $"{prefix}.v_proj", Rows(heads.AttendingGroups, config.HeadDim));
            if (config.MixerShape(layer) is { } shape)
            {
                Tensor Random(params long[] size) => (rand(size, generator: generator) - 0.5) * 0.4;
                var mixer = $"{prefix}.mamba";
                tensors[$"{mixer}.in_proj.weight"] = Random(2 * shape.InnerSize, shape.InputSize);
                tensors[$"{mixer}.conv1d.weight"] = Random(shape.InnerSize, 1, shape.ConvKernel);
                tensors[$"{mixer}.conv1d.bias"] = Random(shape.InnerSize);
                tensors[$"{mixer}.x_proj.weight"] = Random(shape.TimeStepRank + 2 * shape.StateSize, shape.InnerSize);
                tensors[$"{mixer}.dt_proj.weight"] = Random(shape.InnerSize, shape.TimeStepRank);
                tensors[$"{mixer}.dt_proj.bias"] = Random(shape.InnerSize) - 2;
                tensors[$"{mixer}.A_log"] = arange(1, shape.StateSize + 1, dtype: ScalarType.Float32).log().unsqueeze(0).repeat(shape.InnerSize, 1);
                tensors[$"{mixer}.D"] = ones(shape.InnerSize);
                tensors[$"{mixer}.out_proj.weight"] = Random(shape.OutputSize, shape.InnerSize);
            }
        }
        SafeTensorsWriter.Write(Path.Combine(Folder, "model.safetensors"), tensors);
    }

    public string Folder { get; }

    private static long[] Rows(IEnumerable<int> units, int size) => units.SelectMany(u => Enumerable.Range(u * size, size)).Select(r => (long)r).ToArray();

    private static void Keep(Dictionary<string, Tensor> tensors, string prefix, long[] rows)
    {
        foreach (var part in new[] { "weight", "bias" })
        {
            if (tensors.TryGetValue($"{prefix}.{part}", out var full))
            {
                tensors[$"{prefix}.{part}"] = full.index_select(0, tensor(rows));
            }
        }
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}
