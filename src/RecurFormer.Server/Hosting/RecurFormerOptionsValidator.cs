using Microsoft.Extensions.Options;
using RecurFormer.Engine;
using RecurFormer.Server.Tools;

namespace RecurFormer.Server.Hosting;

/// <summary>What data annotations cannot say: sizes that parse, durations that make sense, files that exist, settings that exclude each other.</summary>
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
        if (options.ApiKeyFile is { Length: > 0 } file && ModelLocator.Find(file, isDirectory: false) is null)
        {
            failures.Add($"RecurFormer:ApiKeyFile: '{file}' does not exist");
        }
        if (options.ApiKeys.Any(string.IsNullOrWhiteSpace)) failures.Add("RecurFormer:ApiKeys must not contain empty keys");
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    public ValidateOptionsResult Validate(string? name, EngineSettings options)
    {
        var failures = new List<string>();
        if (!string.IsNullOrWhiteSpace(options.CacheMemory))
        {
            CheckSize(failures, "RecurFormer:Engine:CacheMemory", options.CacheMemory);
            if (options.GpuMemoryUtilization is not null)
            {
                failures.Add("RecurFormer:Engine:CacheMemory (--cache-memory) and RecurFormer:Engine:GpuMemoryUtilization (--gpu-memory-utilization) exclude each other; give one");
            }
        }
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
                : $"RecurFormer:Model:Path: the folder '{options.Path}' does not exist (looked in {Directory.GetCurrentDirectory()} and the folders above it and above the application)");
        }
        if (options.Device.Trim().ToLowerInvariant() is not ("cpu" or "cuda") && !options.Device.StartsWith("cuda:", StringComparison.OrdinalIgnoreCase))
        {
            failures.Add($"RecurFormer:Model:Device must be cpu, cuda or cuda:N, not '{options.Device}'");
        }
        if (options.DType.Trim().ToLowerInvariant() is not ("auto" or "float32" or "fp32" or "bfloat16" or "bf16" or "float16" or "fp16"))
        {
            failures.Add($"RecurFormer:Model:DType must be auto, float32, bfloat16 or float16, not '{options.DType}'");
        }
        if (!string.IsNullOrWhiteSpace(options.ToolCallParser) && ToolCallFormat.ByName(options.ToolCallParser) is null)
        {
            failures.Add($"RecurFormer:Model:ToolCallParser must be one of {ToolCallFormat.Names}, not '{options.ToolCallParser}'");
        }
        if (options.ServedModelAliases.Any(string.IsNullOrWhiteSpace))
        {
            failures.Add("RecurFormer:Model:ServedModelAliases must not contain empty names");
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
