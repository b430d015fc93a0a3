using RecurFormer.Model;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Conversion;

/// <summary>
/// Turns a plain Transformer checkpoint into a RecurFormer checkpoint: the selected KV groups become windowed
/// (config only), are computed by one new Mamba mixer per layer (q/k/v shrink to the kept groups), or both (window
/// attention plus the mixer's output added; q/k/v unchanged). The mixer's weights are initialised by
/// <see cref="MambaInitializer"/>; every other weight is copied bit for bit.
/// </summary>
public static class Converter
{
    public static HybridLayout Convert(string sourceFolder, ConversionPlan plan, string outFolder)
    {
        var config = ModelConfig.Load(sourceFolder) as TransformerConfig
            ?? throw new ModelLoadException($"{sourceFolder}: only Transformer checkpoints (qwen2, llama, mistral) can be converted");
        if (config.Hybrid.ReplacesAnything)
        {
            throw new ModelLoadException($"{sourceFolder}: already a converted RecurFormer checkpoint; convert its source model instead");
        }
        var dtype = CheckpointFolder.StoredDType(sourceFolder);
        var layout = plan.Layout(config.NumHiddenLayers, SourceName(sourceFolder, config));
        var converted = config with { Hybrid = layout };

        using var scope = NewDisposeScope();
        using var model = CausalLMLoader.FromPretrained(sourceFolder, new ComputeTarget(CPU, dtype));
        var tensors = CheckpointFolder.StateDict(model);
        if (plan.Kind != ReplacementKind.Window)
        {
            using var generator = new Generator((ulong)plan.Seed);
            for (var layer = 0; layer < config.NumHiddenLayers; layer++)
            {
                ReplaceWithMamba(tensors, converted, layer, generator);
            }
        }
        CheckpointFolder.Write(outFolder, config.Raw, layout.ToJson(), tensors, dtype, sourceFolder);
        return layout;
    }

    /// <summary>Shrinks q/k/v of one layer to the kept groups and adds the mixer's initial weights.</summary>
    private static void ReplaceWithMamba(Dictionary<string, Tensor> tensors, TransformerConfig config, int layer, Generator generator)
    {
        var heads = config.Heads(layer);
        if (heads.MixerGroups.Length == 0)
        {
            return;
        }
        var prefix = $"model.layers.{layer}.self_attn";
        var valueWeight = tensors[$"{prefix}.v_proj.weight"];
        var mixer = MambaInitializer.Create(heads, config.MixerShape(layer)!, valueWeight, generator);
        foreach (var (name, tensor) in mixer)
        {
            tensors[$"{prefix}.mamba.{name}"] = tensor;
        }

        var keptHeadRows = Rows(heads.HeadsOf(heads.AttendingGroups), config.HeadDim);
        var keptGroupRows = Rows(heads.AttendingGroups, config.HeadDim);
        foreach (var (projection, rows) in new[] { ("q_proj", keptHeadRows), ("k_proj", keptGroupRows), ("v_proj", keptGroupRows) })
        {
            foreach (var part in new[] { "weight", "bias" })
            {
                var name = $"{prefix}.{projection}.{part}";
                if (!tensors.TryGetValue(name, out var weight))
                {
                    continue;
                }
                if (rows.Length == 0)
                {
                    tensors.Remove(name);
                }
                else
                {
                    tensors[name] = weight.index_select(0, tensor(rows.Select(r => (long)r).ToArray()));
                }
            }
        }
    }

    /// <summary>Rows [u × headDim, (u+1) × headDim) of each unit u (a head or a group).</summary>
    private static int[] Rows(int[] units, int headDim) => units.SelectMany(u => Enumerable.Range(u * headDim, headDim)).ToArray();

    private static string SourceName(string folder, TransformerConfig config) =>
        config.Raw["_name_or_path"]?.GetValue<string>() is { Length: > 0 } name ? name : Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/'));
}
