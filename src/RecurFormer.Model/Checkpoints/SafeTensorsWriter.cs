using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace RecurFormer.Model.Checkpoints;

/// <summary>
/// Writes a <c>.safetensors</c> file that <see cref="SafeTensorsFile"/> (and HuggingFace's safetensors) reads back:
/// an 8-byte little-endian header length, a JSON header padded with spaces to a multiple of 8 bytes, then the raw
/// little-endian tensor bytes in the header's order (names sorted, as the Python library writes them).
/// </summary>
public static class SafeTensorsWriter
{
    private static readonly Dictionary<ScalarType, string> DTypeNames = new()
    {
        [ScalarType.Float32] = "F32",
        [ScalarType.Float16] = "F16",
        [ScalarType.BFloat16] = "BF16",
        [ScalarType.Float64] = "F64",
        [ScalarType.Int64] = "I64",
        [ScalarType.Int32] = "I32",
        [ScalarType.Int16] = "I16",
        [ScalarType.Int8] = "I8",
        [ScalarType.Byte] = "U8",
        [ScalarType.Bool] = "BOOL",
    };

    /// <summary>
    /// Writes <paramref name="tensors"/> (any device, any supported dtype; each written in its own dtype) to
    /// <paramref name="path"/>, through a temporary file so that a crash never leaves a half-written checkpoint.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToArray();
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        foreach (var (key, value) in metadata ?? new Dictionary<string, string>())
        {
            meta[key] = value;
        }
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var name in names)
        {
            var tensor = tensors[name];
            if (!DTypeNames.TryGetValue(tensor.dtype, out var dtype))
            {
                throw new ArgumentException($"tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store");
            }
            var length = tensor.numel() * tensor.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = dtype,
                ["shape"] = new JsonArray(tensor.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + length),
            };
            offset += length;
        }

        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8;
        var temporary = path + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)padded);
            stream.Write(prefix);
            stream.Write(json);
            for (var i = json.Length; i < padded; i++)
            {
                stream.WriteByte((byte)' ');
            }
            foreach (var name in names)
            {
                using var scope = NewDisposeScope();
                var cpu = tensors[name].detach().to(CPU).contiguous();
                if (cpu.numel() > 0)
                {
                    stream.Write(cpu.bytes);
                }
            }
        }
        File.Move(temporary, path, overwrite: true);
    }
}
