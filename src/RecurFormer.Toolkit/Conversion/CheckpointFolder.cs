using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Conversion;

/// <summary>
/// Writes a RecurFormer checkpoint folder (docs/checkpoint-format.md): config.json (the source config with the
/// <c>recurformer</c> object), model.safetensors, and the source's tokenizer and generation files.
/// </summary>
public static class CheckpointFolder
{
    /// <summary>Files copied unchanged from the source checkpoint when present.</summary>
    public static readonly string[] CopiedFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
        "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
    ];

    /// <summary>Refuses an existing non-empty folder unless <paramref name="force"/>; creates it.</summary>
    public static void Prepare(string folder, bool force)
    {
        if (File.Exists(folder))
        {
            throw new IOException($"{folder} is a file, not a folder");
        }
        if (Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any() && !force)
        {
            throw new OutputExistsException($"{folder} already exists and is not empty: choose another --out or add --force to overwrite");
        }
        Directory.CreateDirectory(folder);
    }

    /// <summary>Writes config.json with <paramref name="recurformer"/> (null removes the section) and the weights in <paramref name="dtype"/>.</summary>
    public static void Write(string folder, JsonObject sourceConfig, JsonObject? recurformer, IReadOnlyDictionary<string, Tensor> tensors, ScalarType dtype, string sourceFolder)
    {
        Directory.CreateDirectory(folder);
        var config = sourceConfig.DeepClone().AsObject();
        config.Remove("recurformer");
        if (recurformer is not null)
        {
            config["recurformer"] = recurformer.DeepClone();
        }
        config["torch_dtype"] = DTypeName(dtype);
        config.Remove("dtype");
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

        using (var scope = NewDisposeScope())
        {
            var converted = tensors.ToDictionary(t => t.Key, t => t.Value.detach().to(CPU).to_type(dtype));
            SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), converted);
        }
        if (Path.GetFullPath(sourceFolder) != Path.GetFullPath(folder))
        {
            foreach (var file in CopiedFiles.Where(f => File.Exists(Path.Combine(sourceFolder, f))))
            {
                File.Copy(Path.Combine(sourceFolder, file), Path.Combine(folder, file), overwrite: true);
            }
        }
    }

    /// <summary>The dtype of the first tensor of a checkpoint on disk (what a conversion writes back).</summary>
    public static ScalarType StoredDType(string folder)
    {
        var single = Path.Combine(folder, "model.safetensors");
        var path = File.Exists(single)
            ? single
            : Directory.GetFiles(folder, "*.safetensors").Where(f => !f.EndsWith("reference.safetensors", StringComparison.Ordinal)).Order().FirstOrDefault()
              ?? throw new FileNotFoundException($"{folder}: no model.safetensors");
        using var file = SafeTensorsFile.Open(path);
        return file.Tensors.Values.First().DType switch
        {
            "BF16" => ScalarType.BFloat16,
            "F16" => ScalarType.Float16,
            _ => ScalarType.Float32,
        };
    }

    public static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => "float32",
    };

    /// <summary>The model's weights under their HuggingFace state-dict names (fused projections split back).</summary>
    public static Dictionary<string, Tensor> StateDict(ICausalLM model) => model.CheckpointTensors().ToDictionary(t => t.Name, t => t.Tensor);
}

/// <summary>An output folder that exists and would be overwritten.</summary>
public sealed class OutputExistsException(string message) : Exception(message);
