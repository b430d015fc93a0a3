using System.Diagnostics;
using Microsoft.Extensions.Options;
using RecurFormer.Engine;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
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
        var folder = ModelLocator.Resolve(options)!;
        try
        {
            var started = Stopwatch.StartNew();
            var target = TorchRuntime.Initialize(new TorchOptions { Device = options.Device, DType = options.DType, Threads = options.Threads });
            var model = CausalLMLoader.FromPretrained(folder, target);
            var tokenizer = CheckpointTokenizer.FromPretrained(folder);
            ChatTemplate? template = null;
            string? templateError = null;
            try
            {
                template = ChatTemplateLoader.Load(folder);
            }
            catch (Exception error) when (error is ChatTemplateNotFoundException or Templates.TemplateException)
            {
                // Completions still work; the chat endpoint answers 400 with this message.
                templateError = error.Message;
                logger.LogWarning("No usable chat template: {Reason}", error.Message);
            }
            var engine = new LLMEngine(model, tokenizer, engineSettings.Value.ToEngineOptions());
            var id = string.IsNullOrWhiteSpace(options.ServedModelName) ? Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)) : options.ServedModelName;
            if (host.State != ServingState.Starting)
            {
                engine.Dispose(); // shutdown began while loading
                return;
            }
            host.SetLoaded(new LoadedModel(id, folder, engine, tokenizer, template, templateError, DateTimeOffset.UtcNow));
            logger.LogInformation("Serving {Model} from {Folder} on {Target}: {Layers} layers, {Replaced} replaced KV groups, max model length {MaxModelLen}, cache budget {Budget} bytes, loaded in {Seconds:F1} s",
                id, folder, target, engine.Layout.Layers, engine.Layout.ReplacedGroups(model.Config), engine.MaxModelLen, engine.CacheBudgetBytes, started.Elapsed.TotalSeconds);
        }
        catch (Exception error)
        {
            host.SetState(ServingState.Failed);
            logger.LogCritical("Cannot serve the model in {Folder}: {Error}", folder, error.Message);
            Environment.ExitCode = 1;
            lifetime.StopApplication();
        }
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
