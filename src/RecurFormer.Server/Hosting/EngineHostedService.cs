using System.Diagnostics;
using Microsoft.Extensions.Options;
using RecurFormer.Engine;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Server.Devices;
using RecurFormer.Server.Tools;
using RecurFormer.Templates.ChatTemplates;
using RecurFormer.Tokenization;

namespace RecurFormer.Server.Hosting;

/// <summary>
/// Loads the model when the host starts (in the background, so that Kestrel already answers health probes and 503s
/// meanwhile) and drains the engine when it stops: new requests get 503, running ones have the grace period to finish,
/// the rest are cancelled. The drain runs in <see cref="StoppingAsync"/>, before any hosted service stops, so Kestrel
/// still accepts connections and answers 503 (not "connection refused") while it lasts. A model that cannot be
/// loaded stops the process with exit code 1.
/// </summary>
internal sealed class EngineHostedService(
    ModelHost host,
    IOptions<ModelOptions> modelOptions,
    IOptions<EngineSettings> engineSettings,
    IOptions<ServerOptions> serverOptions,
    IHostApplicationLifetime lifetime,
    IEnumerable<ModelLoadGate> gates,
    ILogger<EngineHostedService> logger) : IHostedLifecycleService
{
    private Task _loading = Task.CompletedTask;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _loading = Task.Run(async () =>
        {
            await Task.WhenAll(gates.Select(g => g.Open));
            Load();
        }, CancellationToken.None);
        return Task.CompletedTask;
    }

    private void Load()
    {
        var options = modelOptions.Value;
        var located = ModelLocator.Resolve(options)!;
        var folder = located.FullPath;
        if (located.Note is { } note)
        {
            logger.LogInformation("Model folder: {Note}", note);
        }
        try
        {
            var started = Stopwatch.StartNew();
            var target = TorchRuntime.Initialize(new TorchOptions { Device = options.Device, DType = options.DType, Threads = options.Threads });
            var model = CausalLMLoader.FromPretrained(folder, target);
            var tokenizer = CheckpointTokenizer.FromPretrained(folder);
            var (template, templateError) = LoadTemplate(options, folder);
            var settings = engineSettings.Value;
            var engine = new LLMEngine(model, tokenizer, settings.ToEngineOptions(CacheBytesFromDeviceShare(settings, options.Device)));
            var id = string.IsNullOrWhiteSpace(options.ServedModelName) ? Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)) : options.ServedModelName;
            if (host.State != ServingState.Starting)
            {
                engine.Dispose(); // shutdown began while loading
                return;
            }
            var toolFormat = ToolFormatFor(options, template);
            var markers = new Dictionary<int, string>();
            if (toolFormat.Marker is { } marker && tokenizer.TryGetTokenId(marker, out var markerId) && tokenizer.IsSpecialToken(markerId))
            {
                markers[markerId] = marker;
            }
            host.SetLoaded(new LoadedModel(id, folder, engine, tokenizer, template, templateError, DateTimeOffset.UtcNow)
            {
                Aliases = options.ServedModelAliases.Where(a => a != id).Distinct().ToList(),
                ToolFormat = toolFormat,
                ToolMarkerTokens = markers,
            });
            logger.LogInformation("Serving {Model} from {Folder} on {Target}: {Layers} layers, {Replaced} replaced KV groups, max model length {MaxModelLen}, cache budget {Budget} bytes, tool calls as {ToolFormat}, loaded in {Seconds:F1} s",
                id, folder, target, engine.Layout.Layers, engine.Layout.ReplacedGroups(model.Config), engine.MaxModelLen, engine.CacheBudgetBytes, toolFormat.Name, started.Elapsed.TotalSeconds);
            if (engine.PrefixCachingProblem is { } problem)
            {
                logger.LogWarning("{Problem}", problem);
            }
            else
            {
                logger.LogInformation("Prefix caching {State}", engine.PrefixCaching ? "on (KV blocks named by their tokens; ring and Mamba snapshots at block boundaries)" : "off (--no-prefix-caching)");
            }
        }
        catch (Exception error)
        {
            host.SetState(ServingState.Failed);
            logger.LogCritical("Cannot serve the model in {Folder}: {Error}", folder, error.Message);
            Environment.ExitCode = 1;
            lifetime.StopApplication();
        }
    }

    /// <summary>The checkpoint's chat template, or the one given with --chat-template (a file, or the template text).</summary>
    private (ChatTemplate? Template, string? Error) LoadTemplate(ModelOptions options, string folder)
    {
        try
        {
            if (string.IsNullOrWhiteSpace(options.ChatTemplate))
            {
                return (ChatTemplateLoader.Load(folder), null);
            }
            var file = ModelLocator.Find(options.ChatTemplate, isDirectory: false);
            return (ChatTemplateLoader.FromSource(file is null ? options.ChatTemplate : File.ReadAllText(file.FullPath), folder), null);
        }
        catch (Exception error) when (error is ChatTemplateNotFoundException or Templates.TemplateException)
        {
            if (!string.IsNullOrWhiteSpace(options.ChatTemplate))
            {
                throw new InvalidOperationException($"--chat-template does not parse: {error.Message}");
            }
            // Completions still work; the chat endpoint answers 400 with this message.
            logger.LogWarning("No usable chat template: {Reason}", error.Message);
            return (null, error.Message);
        }
    }

    /// <summary>--tool-call-parser, else the format the chat template teaches, else Hermes (the most common among fine-tunes).</summary>
    private ToolCallFormat ToolFormatFor(ModelOptions options, ChatTemplate? template)
    {
        if (!string.IsNullOrWhiteSpace(options.ToolCallParser))
        {
            return ToolCallFormat.ByName(options.ToolCallParser)!;
        }
        var sources = template?.Templates.Values.Select(t => t.Source).ToList() ?? [];
        var detected = sources.Select(ToolCallFormat.Detect).FirstOrDefault(f => f is not null);
        if (detected is null)
        {
            logger.LogInformation("The chat template does not show one tool-call format; tool calls are read and forced as hermes (set --tool-call-parser to change)");
        }
        return detected ?? ToolCallFormat.Hermes;
    }

    /// <summary>
    /// vLLM's --gpu-memory-utilization: this process may use that share of the device; the cache gets what the loaded
    /// model left of it. Null when the cache size is given in bytes instead.
    /// </summary>
    private long? CacheBytesFromDeviceShare(EngineSettings settings, string device)
    {
        if (settings.GpuMemoryUtilization is not { } share)
        {
            return null;
        }
        var index = device.StartsWith("cuda:", StringComparison.OrdinalIgnoreCase) && int.TryParse(device[5..], out var n) ? n : 0;
        if (!device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException("--gpu-memory-utilization needs a CUDA device (--device cuda); on CPU give --cache-memory");
        }
        var info = CudaMemory.TryGetInfo(index, out var error) ?? throw new InvalidOperationException($"--gpu-memory-utilization: {error}");
        var used = info.Total - info.Free;
        var budget = (long)(share * info.Total) - used;
        if (budget <= 0)
        {
            throw new InvalidOperationException($"--gpu-memory-utilization {share}: {share * info.Total / (1 << 20):N0} MiB of the device's {info.Total / (1 << 20):N0} MiB, but {used / (1 << 20):N0} MiB are already in use after loading the model; raise it or use --cache-memory");
        }
        logger.LogInformation("Cache budget {Budget} MiB: {Share} of {Total} MiB on cuda:{Device}, less {Used} MiB in use after loading", budget >> 20, share, info.Total >> 20, index, used >> 20);
        return budget;
    }

    /// <summary>SIGTERM: stop admitting (503), let running and queued requests finish within the grace period, cancel the rest.</summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        if (host.State is not (ServingState.Ready or ServingState.Starting))
        {
            return; // already drained (a second stop) or never served
        }
        host.SetState(ServingState.Draining);
        await _loading;
        if (host.Model is { } model)
        {
            var grace = serverOptions.Value.DrainGracePeriod;
            logger.LogInformation("Draining: {Running} running and {Waiting} waiting requests get up to {Grace} s to finish",
                model.Engine.Stats.Running, model.Engine.Stats.Waiting, grace.TotalSeconds);
            await model.Engine.StopAsync(grace);
            logger.LogInformation("Drained");
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Kestrel has stopped too: nothing can touch the engine any more, so its memory can go.</summary>
    public Task StoppedAsync(CancellationToken cancellationToken)
    {
        if (host.State != ServingState.Stopped)
        {
            host.Model?.Engine.Dispose();
            host.SetState(ServingState.Stopped);
        }
        return Task.CompletedTask;
    }
}
