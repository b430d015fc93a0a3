using System.ComponentModel.DataAnnotations;
using RecurFormer.Engine;

namespace RecurFormer.Server.Hosting;

/// <summary>
/// Engine limits and memory (<c>RecurFormer:Engine</c>), turned into <see cref="EngineOptions"/>. The defaults are
/// the engine's own; what this adds is the configuration shape (sizes as text, the CUDA memory fraction) and the
/// ranges checked at start.
/// </summary>
public sealed class EngineSettings
{
    public const string Section = "RecurFormer:Engine";

    private static readonly EngineOptions Defaults = new();

    /// <summary>One budget for every kind of cache, e.g. <c>512MB</c>; empty = the engine's default (or the CUDA fraction below).</summary>
    public string? CacheMemory { get; set; }

    /// <summary>
    /// vLLM's <c>--gpu-memory-utilization</c>: on CUDA, the share of the device's memory this server may use for
    /// weights and cache together; the cache gets what is left of it after the model loaded.
    /// </summary>
    [Range(0.01, 1.0)]
    public double? GpuMemoryUtilization { get; set; }

    [Range(1, 1024)]
    public int BlockSize { get; set; } = Defaults.BlockSize;

    [Range(1, 4096)]
    public int MaxNumSeqs { get; set; } = Defaults.MaxNumSeqs;

    [Range(1, 1 << 20)]
    public int MaxNumBatchedTokens { get; set; } = Defaults.MaxNumBatchedTokens;

    [Range(1, 1 << 24)]
    public int? MaxModelLen { get; set; } = Defaults.MaxModelLen;

    [Range(1, 1 << 20)]
    public int MaxWaitingRequests { get; set; } = Defaults.MaxWaitingRequests;

    [Required]
    public string KvCacheDType { get; set; } = Defaults.KvCacheDType;

    /// <summary>Automatic prefix caching (on by default; <c>--no-prefix-caching</c> turns it off).</summary>
    public bool EnablePrefixCaching { get; set; } = true;

    /// <param name="cacheBytes">The cache budget when it was derived from the CUDA memory fraction.</param>
    public EngineOptions ToEngineOptions(long? cacheBytes = null) => new()
    {
        CacheMemoryBytes = cacheBytes ?? (string.IsNullOrWhiteSpace(CacheMemory) ? Defaults.CacheMemoryBytes : EngineOptions.ParseBytes(CacheMemory)),
        BlockSize = BlockSize,
        MaxNumSeqs = MaxNumSeqs,
        MaxNumBatchedTokens = MaxNumBatchedTokens,
        MaxModelLen = MaxModelLen,
        MaxWaitingRequests = MaxWaitingRequests,
        KvCacheDType = KvCacheDType,
        EnablePrefixCaching = EnablePrefixCaching,
    };
}
