using RecurFormer.Model.CausalLM;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Generation;

/// <summary>How the CLI picks the next token: greedy when <see cref="Temperature"/> is 0, else seeded sampling.</summary>
public sealed record SamplingOptions(double Temperature = 0, long? Seed = null);

/// <summary>
/// Generates one sequence with the model's own cache: prefill the prompt, then decode one token at a time. For
/// the CLI, the toolkit and tests; the serving engine batches many sequences and samples with the full sampler.
/// </summary>
public sealed class SimpleGenerator(ICausalLM model)
{
    /// <summary>Yields up to <paramref name="maxTokens"/> ids, stopping after one of <paramref name="stopIds"/>.</summary>
    public IEnumerable<int> Generate(IReadOnlyList<int> prompt, int maxTokens, IReadOnlySet<int> stopIds, SamplingOptions? sampling = null)
    {
        sampling ??= new SamplingOptions();
        if (prompt.Count == 0)
        {
            throw new ArgumentException("the prompt needs at least one token");
        }
        var vocab = model.Config.VocabSize;
        if (prompt.Any(id => id < 0 || id >= vocab))
        {
            throw new ArgumentOutOfRangeException(nameof(prompt), $"token id {prompt.First(id => id < 0 || id >= vocab)} is outside the vocabulary (0..{vocab - 1})");
        }

        using var generator = sampling.Seed is { } seed ? new Generator((ulong)seed, model.Target.Device) : null; // on the device: multinomial needs a generator of its own device
        using var cache = model.CreateCache(prompt.Count + maxTokens);
        long[] next = prompt.Select(id => (long)id).ToArray();
        for (var step = 0; step < maxTokens; step++)
        {
            int token;
            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(new ForwardBatch([next], cache.Sequences))[0];
                token = Pick(logits, sampling, generator);
            }
            yield return token;
            if (stopIds.Contains(token))
            {
                yield break;
            }
            next = [token];
        }
    }

    private static int Pick(Tensor logits, SamplingOptions sampling, Generator? generator)
    {
        if (sampling.Temperature <= 0)
        {
            return (int)logits.argmax().item<long>();
        }
        var probabilities = nn.functional.softmax(logits / sampling.Temperature, 0);
        return (int)multinomial(probabilities, 1, generator: generator).item<long>();
    }
}
