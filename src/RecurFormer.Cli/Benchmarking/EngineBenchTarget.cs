using RecurFormer.Engine;
using RecurFormer.Engine.Requests;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>Requests straight into an <see cref="LLMEngine"/>, with no HTTP in between.</summary>
public sealed class EngineBenchTarget(string name, LLMEngine engine) : IBenchTarget
{
    private int _next;

    public string Name => name;

    public async Task<RequestMeasurement> Run(int[] promptIds, int maxTokens, CancellationToken cancellation)
    {
        var measurement = new RequestMeasurement();
        var id = $"bench-{Interlocked.Increment(ref _next)}";
        var events = engine.Submit(new GenerationRequest(id, promptIds, new SamplingParams { Temperature = 0, MaxTokens = maxTokens, IgnoreEos = true }), cancellation);
        await foreach (var engineEvent in events.ReadAllAsync(cancellation))
        {
            switch (engineEvent)
            {
                case TokenEvent token:
                    measurement.TokenArrived();
                    measurement.TokenIds.Add(token.TokenId);
                    break;
                case ErrorEvent error:
                    throw new UserError($"{name}: request failed in the engine: {error.Message}");
            }
        }
        measurement.FinishedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        return measurement;
    }
}
