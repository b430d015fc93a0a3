using RecurFormer.Engine.Requests;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Sampling;

/// <summary>What the sampler needs to know about one sequence to choose its next token.</summary>
internal interface ISamplingState
{
    SamplingParams Params { get; }
    IReadOnlyList<int> PromptTokenIds { get; }
    IReadOnlyList<int> OutputTokenIds { get; }

    /// <summary>This sequence's random generator (seeded per request), or null for the shared default.</summary>
    Generator? Random { get; }

    /// <summary>Token ids that may not be chosen yet (eos and stop ids before min_tokens).</summary>
    IReadOnlyCollection<int> Suppressed { get; }
}

/// <summary>
/// Chooses the next token of each sequence from its logits row: logit bias, repetition / presence / frequency
/// penalties, suppressed tokens, then greedy, or temperature + top-k + top-p + min-p and a draw from the
/// sequence's own generator (so a seeded request gives the same tokens whatever else is in the batch).
/// Log-probabilities are those of the model's raw distribution, as vLLM reports by default.
/// </summary>
internal static class Sampler
{
    /// <summary>
    /// True when the token is simply the row's argmax (greedy, nothing to apply, no logprobs): the engine then reads
    /// the argmax of all rows at once, one device-to-host transfer per step instead of one per sequence.
    /// </summary>
    public static bool IsPlainGreedy(ISamplingState state)
    {
        var p = state.Params;
        return p.IsGreedy && !p.Logprobs && p.TopLogprobs == 0 && p.LogitBias.Count == 0 && p.RepetitionPenalty == 1.0
            && p.PresencePenalty == 0 && p.FrequencyPenalty == 0 && state.Suppressed.Count == 0;
    }

    public static (int Token, TokenLogprob? Logprob) Sample(Tensor logits, ISamplingState state)
    {
        using var scope = NewDisposeScope();
        var p = state.Params;
        TokenLogprob? logprob = null;
        var processed = Process(logits, state);

        int token;
        if (p.IsGreedy)
        {
            token = (int)processed.argmax().item<long>();
        }
        else
        {
            var probabilities = Truncate(nn.functional.softmax(processed / p.Temperature, 0), p);
            token = (int)multinomial(probabilities, 1, generator: state.Random).item<long>();
        }

        if (p.Logprobs || p.TopLogprobs > 0)
        {
            var logs = nn.functional.log_softmax(logits, 0);
            var top = new List<(int, double)>();
            if (p.TopLogprobs > 0)
            {
                var (values, indices) = logs.topk(p.TopLogprobs);
                var v = values.cpu().data<float>().ToArray();
                var i = indices.cpu().data<long>().ToArray();
                top.AddRange(i.Select((id, k) => ((int)id, (double)v[k])));
            }
            logprob = new TokenLogprob(token, logs[token].item<float>(), top);
        }
        return (token, logprob);
    }

    /// <summary>Bias, penalties and suppression applied to a copy of the logits row.</summary>
    private static Tensor Process(Tensor logits, ISamplingState state)
    {
        var p = state.Params;
        var needsWork = p.LogitBias.Count > 0 || p.RepetitionPenalty != 1.0 || p.PresencePenalty != 0 || p.FrequencyPenalty != 0 || state.Suppressed.Count > 0;
        if (!needsWork)
        {
            return logits;
        }
        var row = logits.clone();
        var device = row.device;
        if (p.LogitBias.Count > 0)
        {
            var ids = tensor(p.LogitBias.Keys.Select(k => (long)k).ToArray(), device: device);
            var bias = tensor(p.LogitBias.Values.Select(v => (float)v).ToArray(), device: device);
            row.index_add_(0, ids, bias, 1);
        }
        if (p.RepetitionPenalty != 1.0)
        {
            var seen = state.PromptTokenIds.Concat(state.OutputTokenIds).Distinct().Select(t => (long)t).ToArray();
            if (seen.Length > 0)
            {
                var ids = tensor(seen, device: device);
                var values = row.index_select(0, ids);
                var penalised = where(values > 0, values / p.RepetitionPenalty, values * p.RepetitionPenalty);
                row.index_copy_(0, ids, penalised);
            }
        }
        if ((p.PresencePenalty != 0 || p.FrequencyPenalty != 0) && state.OutputTokenIds.Count > 0)
        {
            var counts = state.OutputTokenIds.GroupBy(t => t).ToArray();
            var ids = tensor(counts.Select(g => (long)g.Key).ToArray(), device: device);
            var penalty = tensor(counts.Select(g => (float)(p.FrequencyPenalty * g.Count() + p.PresencePenalty)).ToArray(), device: device);
            row.index_add_(0, ids, penalty, -1);
        }
        if (state.Suppressed.Count > 0)
        {
            var ids = tensor(state.Suppressed.Select(t => (long)t).ToArray(), device: device);
            row.index_fill_(0, ids, float.NegativeInfinity);
        }
        return row;
    }

    /// <summary>top-k, then top-p (smallest set whose mass reaches p), then min-p (relative to the best token); renormalised by multinomial.</summary>
    private static Tensor Truncate(Tensor probabilities, SamplingParams p)
    {
        var vocab = probabilities.shape[0];
        if (p.TopK > 0 && p.TopK < vocab)
        {
            var kth = probabilities.topk(p.TopK).values[p.TopK - 1];
            probabilities = probabilities.masked_fill(probabilities < kth, 0);
            probabilities = probabilities / probabilities.sum(); // top-p measures mass within the top k, as HF and vLLM do
        }
        if (p.TopP < 1.0)
        {
            var (sorted, order) = probabilities.sort(descending: true);
            var before = sorted.cumsum(0) - sorted;                 // mass of the better tokens
            var dropSorted = before >= p.TopP;                      // keeps the first token always
            var drop = zeros_like(dropSorted).index_copy(0, order, dropSorted);
            probabilities = probabilities.masked_fill(drop, 0);
        }
        if (p.MinP > 0)
        {
            probabilities = probabilities.masked_fill(probabilities < probabilities.max() * p.MinP, 0);
        }
        return probabilities;
    }
}
