using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Checkpoints;

namespace RecurFormer.Model.Tests;

/// <summary>A checkpoint split into shards with model.safetensors.index.json loads to the same model.</summary>
public sealed class ShardedCheckpointTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("recurformer-sharded-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Sharded_weights_give_the_same_logits_as_the_single_file()
    {
        var source = TestData.Fixture("llama-tiny");
        File.Copy(Path.Combine(source, "config.json"), Path.Combine(_folder, "config.json"));
        var weightMap = new Dictionary<string, string>();
        using (var single = SafeTensorsFile.Open(Path.Combine(source, "model.safetensors")))
        {
            var names = single.Tensors.Keys.Order(StringComparer.Ordinal).ToArray();
            var shards = new[] { names[..(names.Length / 2)], names[(names.Length / 2)..] };
            for (var i = 0; i < shards.Length; i++)
            {
                var file = $"model-{i + 1:00000}-of-00002.safetensors";
                WriteShard(single, shards[i], Path.Combine(_folder, file));
                foreach (var name in shards[i])
                {
                    weightMap[name] = file;
                }
            }
        }
        File.WriteAllText(Path.Combine(_folder, "model.safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { }, weight_map = weightMap }));

        using var sharded = TestData.Load(_folder);
        using var expected = TestData.Reference(source, "logits_0");
        using var cache = sharded.CreateCache(256);
        using var logits = sharded.Forward(new ForwardBatch([TestData.ReferenceIds(source, "prompt_0")], cache.Sequences) { AllLogits = true });
        Assert.True((logits - expected).abs().max().item<float>() < 1e-4);
    }

    /// <summary>Copies the named tensors' bytes into a new safetensors file (the format in a dozen lines).</summary>
    private static void WriteShard(SafeTensorsFile source, string[] names, string path)
    {
        var header = new Dictionary<string, object>();
        var data = new MemoryStream();
        foreach (var name in names)
        {
            var info = source.Tensors[name];
            using var tensor = source.Load(name);
            var bytes = tensor.bytes.ToArray();
            header[name] = new { dtype = info.DType, shape = info.Shape, data_offsets = new[] { data.Length, data.Length + bytes.Length } };
            data.Write(bytes);
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var output = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)json.Length);
        output.Write(length);
        output.Write(json);
        data.Position = 0;
        data.CopyTo(output);
    }
}
