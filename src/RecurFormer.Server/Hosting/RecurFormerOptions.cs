using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;
using RecurFormer.Engine;

namespace RecurFormer.Server.Hosting;

/// <summary>Server-wide settings, bound from the <c>RecurFormer</c> configuration section.</summary>
public sealed class ServerOptions
{
    public const string Section = "RecurFormer";

    /// <summary>Interface to listen on when no <c>Urls</c> are configured.</summary>
    [Required]
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Port to listen on when no <c>Urls</c> are configured; 0 picks a free port.</summary>
    [Range(0, 65535)]
    public int Port { get; set; } = 8000;

    /// <summary>Keys accepted on <c>/v1/*</c> as <c>Authorization: Bearer KEY</c>; none = no authentication.</summary>
    public List<string> ApiKeys { get; set; } = [];

    /// <summary>A file with one API key per line (blank lines and lines starting with # ignored), added to <see cref="ApiKeys"/>.</summary>
    public string? ApiKeyFile { get; set; }

    /// <summary>Largest request body, e.g. <c>8MB</c>; larger bodies get a 413.</summary>
    [Required]
    public string MaxRequestBodySize { get; set; } = "8MB";

    /// <summary>Longest a request may wait in the engine's queue before it is refused with a 503.</summary>
    public TimeSpan QueueTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Longest a whole generation may take (0 = no limit); then it is cancelled.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>On SIGTERM, how long running requests may take to finish before they are cancelled.</summary>
    public TimeSpan DrainGracePeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Interval of the SSE comment sent to a stream that has nothing to say yet (queued, long prefill).</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Seconds suggested in <c>Retry-After</c> on 429 and 503.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 1;

    public long MaxRequestBodyBytes => EngineOptions.ParseBytes(MaxRequestBodySize);
}

/// <summary>Which checkpoint to serve and where it runs (<c>RecurFormer:Model</c>).</summary>
public sealed class ModelOptions
{
    public const string Section = "RecurFormer:Model";

    /// <summary>Checkpoint folder; empty = the first of <see cref="DefaultCandidates"/> that exists.</summary>
    public string? Path { get; set; }

    /// <summary>
    /// The demo checkpoints, in order of preference, relative to the working directory or any folder above it or
    /// above the application: the RecurFormer demo model once it exists, else its teacher.
    /// </summary>
    public List<string> DefaultCandidates { get; set; } = [];

    /// <summary>The id clients put in <c>model</c>; empty = the checkpoint folder's name.</summary>
    public string? ServedModelName { get; set; }

    [Required]
    public string Device { get; set; } = "cpu";

    [Required]
    public string DType { get; set; } = "auto";

    [Range(1, 1024)]
    public int? Threads { get; set; }
}

/// <summary>Engine limits and memory (<c>RecurFormer:Engine</c>), turned into <see cref="EngineOptions"/>.</summary>
public sealed class EngineSettings
{
    public const string Section = "RecurFormer:Engine";

    /// <summary>One budget for every kind of cache, e.g. <c>512MB</c>.</summary>
    [Required]
    public string CacheMemory { get; set; } = "512MB";

    [Range(1, 1024)]
    public int BlockSize { get; set; } = 16;

    [Range(1, 4096)]
    public int MaxNumSeqs { get; set; } = 64;

    [Range(1, 1 << 20)]
    public int MaxNumBatchedTokens { get; set; } = 512;

    [Range(1, 1 << 24)]
    public int? MaxModelLen { get; set; }

    [Range(1, 1 << 20)]
    public int MaxWaitingRequests { get; set; } = 256;

    [Required]
    public string KvCacheDType { get; set; } = "auto";

    public EngineOptions ToEngineOptions() => new()
    {
        CacheMemoryBytes = EngineOptions.ParseBytes(CacheMemory),
        BlockSize = BlockSize,
        MaxNumSeqs = MaxNumSeqs,
        MaxNumBatchedTokens = MaxNumBatchedTokens,
        MaxModelLen = MaxModelLen,
        MaxWaitingRequests = MaxWaitingRequests,
        KvCacheDType = KvCacheDType,
    };
}

/// <summary>What data annotations cannot say: sizes that parse, durations that make sense, files that exist.</summary>
internal sealed class RecurFormerOptionsValidator : IValidateOptions<ServerOptions>, IValidateOptions<EngineSettings>, IValidateOptions<ModelOptions>
{
    public static readonly TimeSpan MinQueueTimeout = TimeSpan.FromMilliseconds(10);
    public static readonly TimeSpan MaxQueueTimeout = TimeSpan.FromHours(24);
    public static readonly TimeSpan MaxTimer = TimeSpan.FromMilliseconds(int.MaxValue);

    public ValidateOptionsResult Validate(string? name, ServerOptions options)
    {
        var failures = new List<string>();
        CheckSize(failures, "RecurFormer:MaxRequestBodySize", options.MaxRequestBodySize);
        // Polly's timeout strategy accepts [10 ms, 24 h]; outside it every generation would fail, not the start.
        if (options.QueueTimeout < MinQueueTimeout || options.QueueTimeout > MaxQueueTimeout)
        {
            failures.Add($"RecurFormer:QueueTimeout must be between {MinQueueTimeout} and {MaxQueueTimeout}, not {options.QueueTimeout}");
        }
        // Timers (CancellationTokenSource, Task.WaitAsync) take at most int.MaxValue milliseconds (about 24.8 days).
        if (options.RequestTimeout < TimeSpan.Zero || options.RequestTimeout > MaxTimer)
        {
            failures.Add($"RecurFormer:RequestTimeout must be 0 (no limit) or positive and at most {MaxTimer}, not {options.RequestTimeout}");
        }
        if (options.DrainGracePeriod < TimeSpan.Zero || options.DrainGracePeriod > MaxTimer)
        {
            failures.Add($"RecurFormer:DrainGracePeriod must be between 0 and {MaxTimer}, not {options.DrainGracePeriod}");
        }
        if (options.KeepAliveInterval <= TimeSpan.Zero || options.KeepAliveInterval > MaxTimer)
        {
            failures.Add($"RecurFormer:KeepAliveInterval must be positive and at most {MaxTimer}, not {options.KeepAliveInterval}");
        }
        if (options.ApiKeyFile is { Length: > 0 } file && !File.Exists(file)) failures.Add($"RecurFormer:ApiKeyFile: '{file}' does not exist");
        if (options.ApiKeys.Any(string.IsNullOrWhiteSpace)) failures.Add("RecurFormer:ApiKeys must not contain empty keys");
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    public ValidateOptionsResult Validate(string? name, EngineSettings options)
    {
        var failures = new List<string>();
        CheckSize(failures, "RecurFormer:Engine:CacheMemory", options.CacheMemory);
        if (options.KvCacheDType is not ("auto" or "float32" or "bfloat16" or "float16"))
        {
            failures.Add($"RecurFormer:Engine:KvCacheDType must be auto, float32, bfloat16 or float16, not '{options.KvCacheDType}'");
        }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    public ValidateOptionsResult Validate(string? name, ModelOptions options)
    {
        var failures = new List<string>();
        if (ModelLocator.Resolve(options) is null)
        {
            failures.Add(string.IsNullOrWhiteSpace(options.Path)
                ? $"no model configured and none of the demo models ({string.Join(", ", options.DefaultCandidates)}) was found; set RecurFormer:Model:Path (--model)"
                : $"RecurFormer:Model:Path: the folder '{options.Path}' does not exist");
        }
        if (options.Device.Trim().ToLowerInvariant() is not ("cpu" or "cuda") && !options.Device.StartsWith("cuda:", StringComparison.OrdinalIgnoreCase))
        {
            failures.Add($"RecurFormer:Model:Device must be cpu, cuda or cuda:N, not '{options.Device}'");
        }
        if (options.DType.Trim().ToLowerInvariant() is not ("auto" or "float32" or "fp32" or "bfloat16" or "bf16" or "float16" or "fp16"))
        {
            failures.Add($"RecurFormer:Model:DType must be auto, float32, bfloat16 or float16, not '{options.DType}'");
        }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void CheckSize(List<string> failures, string key, string value)
    {
        try
        {
            EngineOptions.ParseBytes(value);
        }
        catch (FormatException error)
        {
            failures.Add($"{key}: {error.Message}");
        }
    }
}

/// <summary>Finds the checkpoint folder: the configured path, or the first demo model found near the working directory or the app.</summary>
public static class ModelLocator
{
    public static string? Resolve(ModelOptions options)
    {
        if (!string.IsNullOrWhiteSpace(options.Path))
        {
            return Directory.Exists(options.Path) ? System.IO.Path.GetFullPath(options.Path) : null;
        }
        foreach (var candidate in options.DefaultCandidates)
        {
            foreach (var root in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            {
                for (var dir = new DirectoryInfo(root); dir is not null; dir = dir.Parent)
                {
                    var path = System.IO.Path.Combine(dir.FullName, candidate);
                    if (File.Exists(System.IO.Path.Combine(path, "config.json")))
                    {
                        return path;
                    }
                }
            }
        }
        return null;
    }
}
