using RecurFormer.Model.CausalLM;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>
/// Greedy decoding of several prompts at once: one packed prefill, then batched one-token steps. An answer ends before
/// its first stop token (which it does not keep) or after <c>maxTokens</c> tokens: an answer of <c>maxTokens</c>
/// tokens may have been cut off.
/// </summary>
public static class GreedyDecoder
{
    public static List<long>[] Decode(ICausalLM model, long[][] prompts, HashSet<long> stopIds, int maxTokens)
    {
        using var caches = model.CreateCache(prompts.Max(p => p.Length) + maxTokens, prompts.Length);
        var outputs = prompts.Select(_ => new List<long>()).ToArray();
        var active = Enumerable.Range(0, prompts.Length).ToList();
        var next = prompts;
        for (var step = 0; step < maxTokens && active.Count > 0; step++)
        {
            long[] picked;
            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(new ForwardBatch(next, active.Select(i => caches[i]).ToArray()));
                picked = logits.argmax(1).cpu().data<long>().ToArray();
            }
            var still = new List<int>();
            var tokens = new List<long[]>();
            for (var j = 0; j < active.Count; j++)
            {
                if (stopIds.Contains(picked[j]))
                {
                    continue;
                }
                outputs[active[j]].Add(picked[j]);
                still.Add(active[j]);
                tokens.Add([picked[j]]);
            }
            active = still;
            next = tokens.ToArray();
        }
        return outputs;
    }
}
