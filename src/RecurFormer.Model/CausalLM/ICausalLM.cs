using RecurFormer.Model.Caching;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>A causal language model that computes next-token logits for a batch of sequences with their caches.</summary>
public interface ICausalLM : IDisposable
{
    ModelConfig Config { get; }
    ComputeTarget Target { get; }

    /// <summary>
    /// Runs the batch's new tokens through the model, stores their keys/values and recurrent state in the caches
    /// (advancing them), and returns float32 logits [rows, vocab]: the rows <see cref="ForwardBatch.LogitRows"/> names.
    /// </summary>
    Tensor Forward(ForwardBatch batch);

    /// <summary>The weights under their checkpoint (HuggingFace) names, fused projections split back.</summary>
    IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors();

    /// <summary>
    /// Builds whatever the model keeps per position (RoPE tables) up to <paramref name="positions"/> now, so that a
    /// server allocates it once at start-up instead of growing it under traffic.
    /// </summary>
    void PreparePositions(int positions) { }

    /// <summary>Caches for <paramref name="sequences"/> sequences of up to <paramref name="tokens"/> tokens each (tools, tests).</summary>
    CacheSet CreateCache(int tokens, int sequences = 1) => new(this, sequences, tokens);
}
