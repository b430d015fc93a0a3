using System.Text.Json;
using RecurFormer.Model.Runtime;
using static TorchSharp.torch;

namespace RecurFormer.Model.Checkpoints;

/// <summary>
/// The weights of a checkpoint folder: <c>model.safetensors</c>, or the shards that
/// <c>model.safetensors.index.json</c> names. Layers read their tensors by HuggingFace name, with the shape they
/// expect; a missing tensor or a wrong shape is a <see cref="ModelLoadException"/> naming the file and the tensor.
/// </summary>
public sealed class CheckpointWeights : IDisposable
{
    private readonly Dictionary<string, SafeTensorsFile> _byTensor;
    private readonly List<SafeTensorsFile> _files;
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);

    public string Folder { get; }
    public ComputeTarget Target { get; }

    private CheckpointWeights(string folder, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byTensor, ComputeTarget target)
    {
        Folder = folder;
        _files = files;
        _byTensor = byTensor;
        Target = target;
    }

    public static CheckpointWeights Open(string folder, ComputeTarget target)
    {
        var single = Path.Combine(folder, "model.safetensors");
        var index = Path.Combine(folder, "model.safetensors.index.json");
        var files = new List<SafeTensorsFile>();
        var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(index))
            {
                foreach (var (tensor, shard) in ReadIndex(index))
                {
                    var file = files.FirstOrDefault(f => f.Path == Path.Combine(folder, shard));
                    if (file is null)
                    {
                        file = SafeTensorsFile.Open(Path.Combine(folder, shard));
                        files.Add(file);
                    }
                    if (!file.Contains(tensor))
                    {
                        throw new ModelLoadException($"{file.Path}: missing tensor '{tensor}' that {index} places there");
                    }
                    byTensor[tensor] = file;
                }
            }
            else if (File.Exists(single))
            {
                var file = SafeTensorsFile.Open(single);
                files.Add(file);
                foreach (var name in file.Tensors.Keys)
                {
                    byTensor[name] = file;
                }
            }
            else
            {
                throw new ModelLoadException($"{folder}: no model.safetensors or model.safetensors.index.json");
            }
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }
        return new CheckpointWeights(folder, files, byTensor, target);
    }

    private static IEnumerable<(string Tensor, string Shard)> ReadIndex(string index)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(index));
            return document.RootElement.GetProperty("weight_map").EnumerateObject()
                .Select(entry => (entry.Name, entry.Value.GetString() ?? throw new FormatException($"shard of '{entry.Name}' is not a string")))
                .ToList();
        }
        catch (Exception error) when (error is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new ModelLoadException($"{index}: invalid index ({error.Message})");
        }
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <summary>Reads a tensor in the compute dtype on the compute device, checking its shape.</summary>
    public Tensor Load(string name, params long[] shape) => Load(name, Target.DType, shape);

    /// <summary>Reads a tensor in <paramref name="dtype"/> on the compute device, checking its shape.</summary>
    public Tensor Load(string name, ScalarType dtype, params long[] shape)
    {
        if (!_byTensor.TryGetValue(name, out var file))
        {
            throw new ModelLoadException($"{Folder}: missing tensor '{name}'");
        }
        var info = file.Tensors[name];
        if (!info.Shape.SequenceEqual(shape))
        {
            throw new ModelLoadException($"{file.Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}]");
        }
        _read.Add(name);
        return file.Load(name, dtype, Target.Device);
    }

    /// <summary>Tensors in the checkpoint that no layer read: a sign of a config that does not match the weights.</summary>
    public IReadOnlyList<string> Unread => _byTensor.Keys.Where(name => !_read.Contains(name)).Order(StringComparer.Ordinal).ToList();

    public void Dispose() => _files.ForEach(f => f.Dispose());
}
