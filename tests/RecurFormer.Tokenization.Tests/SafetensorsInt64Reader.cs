using System.Buffers.Binary;
using System.Text.Json;

namespace RecurFormer.Tokenization.Tests;

/// <summary>
/// Just enough of the safetensors format to read the reference token ids: an 8-byte little-endian header length,
/// a JSON header mapping tensor names to dtype, shape and data_offsets (relative to the end of the header), then raw data.
/// </summary>
internal static class SafetensorsInt64Reader
{
    public static long[] Read(string path, string tensorName)
    {
        using var file = File.OpenRead(path);
        Span<byte> lengthBytes = stackalloc byte[8];
        file.ReadExactly(lengthBytes);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(lengthBytes);
        var header = new byte[headerLength];
        file.ReadExactly(header);
        using var json = JsonDocument.Parse(header);
        var tensor = json.RootElement.GetProperty(tensorName);
        Assert.Equal("I64", tensor.GetProperty("dtype").GetString());
        long begin = tensor.GetProperty("data_offsets")[0].GetInt64();
        long end = tensor.GetProperty("data_offsets")[1].GetInt64();
        var data = new byte[end - begin];
        file.Position = 8 + headerLength + begin;
        file.ReadExactly(data);
        var values = new long[data.Length / 8];
        for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(i * 8));
        long expectedCount = tensor.GetProperty("shape").EnumerateArray().Aggregate(1L, (n, d) => n * d.GetInt64());
        Assert.Equal(expectedCount, values.LongLength);
        return values;
    }
}
