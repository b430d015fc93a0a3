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
    /// (advancing them), and returns float32 logits [rows, vocab]: one row per token when
    /// <see cref="ForwardBatch.AllLogits"/>, else one per sequence (its last token).
    /// </summary>
    Tensor Forward(ForwardBatch batch);

    /// <summary>An empty cache for one sequence.</summary>
    ISequenceCache CreateCache();
}
