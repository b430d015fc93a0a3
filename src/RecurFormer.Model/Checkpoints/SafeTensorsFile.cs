using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Checkpoints;

/// <summary>Name, on-disk dtype, shape and byte range of one tensor in a safetensors file.</summary>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// One <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header
/// (<c>{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}</c>), then the raw tensor bytes.
/// Tensors are read one at a time from a memory map, so loading a model needs little more memory than the model.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    private static readonly Dictionary<string, (ScalarType Type, int Size)> DTypes = new()
    {
        ["F32"] = (ScalarType.Float32, 4),
        ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2),
        ["F64"] = (ScalarType.Float64, 8),
        ["I64"] = (ScalarType.Int64, 8),
        ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2),
        ["I8"] = (ScalarType.Int8, 1),
        ["U8"] = (ScalarType.Byte, 1),
        ["BOOL"] = (ScalarType.Bool, 1),
    };

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, long dataStart,
        Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"{path}: file not found");
        }
        var length = new FileInfo(path).Length;
        if (length < 8)
        {
            throw new ModelLoadException($"{path}: not a safetensors file (only {length} bytes)");
        }

        Span<byte> prefix = stackalloc byte[8];
        using (var stream = File.OpenRead(path))
        {
            stream.ReadExactly(prefix);
        }
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(length - 8) || headerLength > 100_000_000)
        {
            throw new ModelLoadException($"{path}: corrupt or truncated safetensors file (header of {headerLength} bytes in a file of {length})");
        }

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        try
        {
            var header = new byte[headerLength];
            view.ReadArray(8, header, 0, header.Length);
            var dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(path, header, length - dataStart);
            return new SafeTensorsFile(path, map, view, dataStart, tensors, metadata);
        }
        catch
        {
            view.Dispose();
            map.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header);
        }
        catch (JsonException error)
        {
            throw new ModelLoadException($"{path}: corrupt safetensors header ({error.Message})");
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new ModelLoadException($"{path}: corrupt safetensors header (not a JSON object)");
            }
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in document.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    foreach (var item in entry.Value.EnumerateObject())
                    {
                        metadata[item.Name] = item.Value.ToString();
                    }
                    continue;
                }
                tensors[entry.Name] = ParseEntry(path, entry, dataLength);
            }
            return (tensors, metadata);
        }
    }

    private static SafeTensorInfo ParseEntry(string path, JsonProperty entry, long dataLength)
    {
        try
        {
            var dtype = entry.Value.GetProperty("dtype").GetString() ?? "";
            var shape = entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            if (!DTypes.TryGetValue(dtype, out var type))
            {
                throw new ModelLoadException($"{path}: tensor '{entry.Name}' has unsupported dtype {dtype}");
            }
            var info = new SafeTensorInfo(entry.Name, dtype, shape, offsets[0], offsets[1]);
            if (offsets.Length != 2 || info.Begin < 0 || info.End < info.Begin || info.End - info.Begin != info.ElementCount * type.Size)
            {
                throw new ModelLoadException($"{path}: tensor '{entry.Name}' has data_offsets [{string.Join(", ", offsets)}] that do not fit its shape [{string.Join(", ", shape)}] and dtype {dtype}");
            }
            if (info.End > dataLength)
            {
                throw new ModelLoadException($"{path}: truncated: tensor '{entry.Name}' ends at byte {info.End} of the data, but the file holds only {dataLength}");
            }
            return info;
        }
        catch (Exception error) when (error is KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException)
        {
            throw new ModelLoadException($"{path}: corrupt safetensors header entry '{entry.Name}' ({error.Message})");
        }
    }

    public bool Contains(string name) => Tensors.ContainsKey(name);

    /// <summary>Reads a tensor and converts it to <paramref name="dtype"/> (its on-disk dtype when null) on <paramref name="device"/>.</summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        if (!Tensors.TryGetValue(name, out var info))
        {
            throw new ModelLoadException($"{Path}: missing tensor '{name}'");
        }
        var (diskType, _) = DTypes[info.DType];
        // The first tensor of a process may be made here (reference files in tests, tools): libtorch must be loaded
        // our way first, or TorchSharp's own loader fails on Debian 12 and poisons the process.
        Runtime.TorchRuntime.EnsureLoaded();
        using var scope = NewDisposeScope();
        var raw = empty(info.Shape, diskType);
        var byteCount = info.End - info.Begin;
        if (byteCount > int.MaxValue)
        {
            throw new ModelLoadException($"{Path}: tensor '{name}' has {byteCount:N0} bytes; tensors over 2 GiB are not supported yet");
        }
        if (byteCount > 0)
        {
            unsafe
            {
                byte* pointer = null;
                _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
                try
                {
                    var source = new ReadOnlySpan<byte>(pointer + _view.PointerOffset + _dataStart + info.Begin, checked((int)byteCount));
                    source.CopyTo(raw.bytes);
                }
                finally
                {
                    _view.SafeMemoryMappedViewHandle.ReleasePointer();
                }
            }
        }
        var result = raw.to(dtype ?? diskType, device ?? CPU);
        return result.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }
}
