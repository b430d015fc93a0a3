using System.Diagnostics.Metrics;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.Metrics;

/// <summary>
/// The <c>recurformer_*</c> instruments (vLLM's set plus the cache bytes by kind that only a hybrid model has).
/// Instrument names are the final Prometheus names minus what the exporter appends: counters get <c>_total</c>;
/// no unit is set, because the exporter would append it (seconds and bytes are already in the names). Engine-side
/// figures are observed from the engine's published stats; per-request latencies are recorded by each
/// <see cref="Generation.GenerationRun"/> as its engine requests end. Every series carries <c>model_name</c> (the served
/// model's id), as vLLM's do, so that dashboards and alerts written for vLLM select the same way.
/// docs/metrics.md lists them; dashboards and alerts depend on these names.
/// </summary>
public sealed class ServingMetrics
{
    public const string MeterName = "RecurFormer.Server";

    /// <summary>vLLM's label for the served model.</summary>
    public const string ModelNameLabel = "model_name";

    private static readonly double[] TtftBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640];
    private static readonly double[] InterTokenBuckets = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];
    private static readonly double[] EndToEndBuckets = [0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920];
    private static readonly double[] QueueBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];

    private readonly Counter<long> _requestSuccess;
    private readonly Histogram<double> _timeToFirstToken;
    private readonly Histogram<double> _interTokenLatency;
    private readonly Histogram<double> _endToEnd;
    private readonly Histogram<double> _queueTime;

    public ServingMetrics(IMeterFactory meters, ModelHost host)
    {
        var meter = meters.Create(MeterName);
        _requestSuccess = meter.CreateCounter<long>("recurformer_request_success",
            description: "Finished requests by finish reason (stop, length, abort = client gone or drained, error).");
        _timeToFirstToken = meter.CreateHistogram("recurformer_time_to_first_token_seconds", unit: null,
            description: "Time from arrival to the first generated token, in seconds.", tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TtftBuckets });
        _interTokenLatency = meter.CreateHistogram("recurformer_inter_token_latency_seconds", unit: null,
            description: "Time between consecutive tokens of a choice, in seconds.", tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = InterTokenBuckets });
        _endToEnd = meter.CreateHistogram("recurformer_e2e_request_latency_seconds", unit: null,
            description: "Time from arrival to the end of the request, in seconds.", tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = EndToEndBuckets });
        _queueTime = meter.CreateHistogram("recurformer_request_queue_time_seconds", unit: null,
            description: "Time a request waited before its prefill started, in seconds.", tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = QueueBuckets });

        var stats = () => host.Model?.Engine.Stats;
        // The served model's label (none before it loads: there is no model to name yet).
        KeyValuePair<string, object?>[] Model() => host.Model is { } loaded ? [new(ModelNameLabel, loaded.Id)] : [];
        Measurement<T> Observe<T>(T value) where T : struct => new(value, Model());
        meter.CreateObservableGauge("recurformer_requests_running", () => Observe(stats()?.Running ?? 0),
            description: "Requests being generated (prefill or decode).");
        meter.CreateObservableGauge("recurformer_requests_waiting", () => Observe(stats()?.Waiting ?? 0),
            description: "Requests waiting for admission.");
        meter.CreateObservableCounter("recurformer_prompt_tokens", () => Observe(stats()?.PromptTokens ?? 0),
            description: "Prompt tokens prefilled.");
        meter.CreateObservableCounter("recurformer_generation_tokens", () => Observe(stats()?.GenerationTokens ?? 0),
            description: "Tokens generated.");
        meter.CreateObservableCounter("recurformer_preemptions", () => Observe(stats()?.Preemptions ?? 0),
            description: "Sequences preempted (cache freed, recomputed later) for lack of cache memory.");
        meter.CreateObservableGauge("recurformer_cache_usage_ratio", () => Observe(stats()?.Cache.UsageRatio ?? 0),
            description: "Share of the cache budget in use (0..1), all kinds of state together.");
        meter.CreateObservableGauge("recurformer_cache_bytes", () =>
            {
                var cache = stats()?.Cache;
                Measurement<long> Kind(long bytes, string kind) => new(bytes, [.. Model(), new("kind", kind)]);
                return new[] { Kind(cache?.KvBytes ?? 0, "kv"), Kind(cache?.WindowKvBytes ?? 0, "window_kv"), Kind(cache?.MambaStateBytes ?? 0, "mamba_state") };
            },
            description: "Cache bytes held by live sequences, by kind: kv (full attention blocks), window_kv (sink + window ring buffers), mamba_state (conv + SSM state).");
        meter.CreateObservableGauge("recurformer_cache_bytes_without_replacement", () => Observe(stats()?.Cache.WithoutReplacementBytes ?? 0),
            description: "Bytes the same live sequences would hold as KV cache with every KV group attending (the source Transformer).");
        meter.CreateObservableGauge("recurformer_cache_saved_ratio", () => Observe(stats()?.Cache.SavedRatio ?? 0),
            description: "1 - cache bytes held / bytes without replacement, over live sequences (0 when none).");
        meter.CreateObservableCounter("recurformer_prefix_cache_queries", () => Observe(stats()?.Cache.Prefix.QueriedTokens ?? 0),
            description: "Prompt tokens looked up in the prefix cache (as vLLM's prefix_cache_queries).");
        meter.CreateObservableCounter("recurformer_prefix_cache_hits", () => Observe(stats()?.Cache.Prefix.HitTokens ?? 0),
            description: "Prompt tokens served from the prefix cache instead of computed (as vLLM's prefix_cache_hits).");
        meter.CreateObservableGauge("recurformer_prefix_cache_bytes", () =>
            {
                var prefix = stats()?.Cache.Prefix;
                Measurement<long> Kind(long bytes, string kind) => new(bytes, [.. Model(), new("kind", kind)]);
                return new[] { Kind(prefix?.KvBytes ?? 0, "kv"), Kind(prefix?.WindowKvBytes ?? 0, "window_kv"), Kind(prefix?.MambaStateBytes ?? 0, "mamba_state") };
            },
            description: "Bytes held by cached prefixes, by kind: kv (named blocks, in use or idle), window_kv and mamba_state (snapshots).");
        meter.CreateObservableGauge("recurformer_prefix_cache_snapshots", () => Observe(stats()?.Cache.Prefix.Snapshots ?? 0),
            description: "Snapshots of rings and Mamba state kept at block boundaries for cached prefixes.");
        meter.CreateObservableGauge("recurformer_cache_capacity_bytes", () => Observe(host.Model?.Engine.CacheBudgetBytes ?? 0),
            description: "The cache memory budget in bytes.");
        meter.CreateObservableGauge("recurformer_model_info", ObserveModelInfo(host),
            description: "The served model (always 1): layers, KV groups replaced, KV bytes cached per token, fixed state bytes per sequence.");
    }

    private static Func<IEnumerable<Measurement<int>>> ObserveModelInfo(ModelHost host) => () =>
    {
        if (host.Model is not { } model)
        {
            return [];
        }
        var layout = model.Engine.Layout;
        return
        [
            new Measurement<int>(1,
                new KeyValuePair<string, object?>(ModelNameLabel, model.Id),
                new KeyValuePair<string, object?>("model", model.Id),
                new KeyValuePair<string, object?>("layers", layout.Layers),
                new KeyValuePair<string, object?>("replaced_kv_groups", layout.ReplacedGroups(model.Engine.Model.Config)),
                new KeyValuePair<string, object?>("kv_bytes_per_token", layout.KvBytesPerToken),
                new KeyValuePair<string, object?>("state_bytes_per_sequence", layout.SlotBytes)),
        ];
    };

    /// <summary>One finished request: its finish reason and latencies (timings from the engine, relative to submission).</summary>
    public void RequestFinished(string finishReason, Engine.Requests.RequestTimings? timings, bool producedTokens, string modelName)
    {
        var model = new KeyValuePair<string, object?>(ModelNameLabel, modelName);
        _requestSuccess.Add(1, model, new KeyValuePair<string, object?>("finished_reason", finishReason));
        if (timings is null)
        {
            return;
        }
        _queueTime.Record(timings.QueueSeconds, model);
        if (producedTokens)
        {
            _timeToFirstToken.Record(timings.TimeToFirstTokenSeconds, model);
        }
        _endToEnd.Record(timings.EndToEndSeconds, model);
    }

    public void InterToken(double seconds, string modelName) => _interTokenLatency.Record(seconds, new KeyValuePair<string, object?>(ModelNameLabel, modelName));
}
