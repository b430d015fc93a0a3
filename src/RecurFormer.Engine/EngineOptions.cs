using System.Globalization;

namespace RecurFormer.Engine;

/// <summary>Limits and memory of the engine (the server binds these from configuration; the CLI from options).</summary>
public sealed record EngineOptions
{
    /// <summary>One byte budget for every kind of cache: KV blocks, window ring buffers, Mamba state slots.</summary>
    public long CacheMemoryBytes { get; init; } = 512L << 20;

    /// <summary>Tokens per KV block.</summary>
    public int BlockSize { get; init; } = 16;

    /// <summary>Most sequences running at once.</summary>
    public int MaxNumSeqs { get; init; } = 64;

    /// <summary>Most tokens in one step (decode tokens plus prefill chunks).</summary>
    public int MaxNumBatchedTokens { get; init; } = 512;

    /// <summary>Longest sequence (prompt + generation); null = the model's max_position_embeddings.</summary>
    public int? MaxModelLen { get; init; }

    /// <summary>Most requests waiting for admission; more are refused (the server answers 429).</summary>
    public int MaxWaitingRequests { get; init; } = 256;

    /// <summary>
    /// Automatic prefix caching (vLLM's <c>--enable-prefix-caching</c>, on by default): full KV blocks are kept after
    /// their request, named by their tokens, and reused by later requests that start the same way; rings and Mamba
    /// state are snapshotted at block boundaries so hybrid models resume too.
    /// </summary>
    public bool EnablePrefixCaching { get; init; } = true;

    /// <summary>
    /// For models with rings or Mamba state: a snapshot every this many prompt tokens (a multiple of the block size; 256 lets a shared system prompt of a few hundred tokens hit on hybrid models at a snapshot cost of about 1/6 of the KV it saves on the RecurFormer demo model),
    /// besides the one at the prompt's last full block.
    /// </summary>
    public int SnapshotIntervalTokens { get; init; } = 256;

    /// <summary><c>auto</c> (16-bit: bfloat16, or float16 under float16 compute on CUDA), <c>float32</c>, <c>bfloat16</c> or <c>float16</c>: how KV is stored.</summary>
    public string KvCacheDType { get; init; } = "auto";

    /// <summary>Parses sizes such as <c>512MB</c>, <c>2GiB</c>, <c>64M</c> or a plain byte count.</summary>
    public static long ParseBytes(string text)
    {
        var value = text.Trim().ToUpperInvariant().Replace("IB", "B", StringComparison.Ordinal);
        (string Suffix, long Factor)[] units = [("KB", 1L << 10), ("MB", 1L << 20), ("GB", 1L << 30), ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("B", 1)];
        foreach (var (suffix, factor) in units)
        {
            if (value.EndsWith(suffix, StringComparison.Ordinal) && double.TryParse(value[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var number) && number > 0)
            {
                return (long)(number * factor);
            }
        }
        if (long.TryParse(value, out var bytes) && bytes > 0)
        {
            return bytes;
        }
        throw new FormatException($"'{text}' is not a memory size (e.g. 512MB, 2GB, 1048576)");
    }
}
