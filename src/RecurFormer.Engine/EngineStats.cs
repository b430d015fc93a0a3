using RecurFormer.Engine.Caching;

namespace RecurFormer.Engine;

/// <summary>A snapshot of the engine after a step, for metrics and health (read from any thread).</summary>
public sealed record EngineStats(
    int Running,
    int Waiting,
    CacheUsage Cache,
    long Preemptions,
    long PromptTokens,
    long GenerationTokens,
    long Steps,
    long LiveTensors);
