using System.Numerics.Tensors;
using RecurFormer.Engine.Requests;

namespace RecurFormer.Engine.Sampling;

/// <summary>What the sampler needs to know about one sequence to choose its next token.</summary>
internal interface ISamplingState
{
    SamplingParams Params { get; }
    IReadOnlyList<int> PromptTokenIds { get; }
    IReadOnlyList<int> OutputTokenIds { get; }

    /// <summary>This sequence's random generator (seeded per request and choice), or null for the shared one.</summary>
    Random? Random { get; }

    /// <summary>Token ids that may not be chosen yet (eos and stop ids before min_tokens).</summary>
    IReadOnlyCollection<int> Suppressed { get; }

    /// <summary>Constrained decoding, or null.</summary>
    ITokenConstraint? Constraint { get; }

    /// <summary>End-of-sequence ids: allowed under a constraint only once it is complete.</summary>
    IReadOnlySet<int> StopTokenIds { get; }
}

/// <summary>
/// Chooses the next token of each sequence from its logits row, on the host: logit bias, repetition / presence /
/// frequency penalties, suppressed tokens and a constraint's mask, then greedy, or temperature + top-k + top-p +
/// min-p and a draw from the sequence's own generator (so a seeded request gives the same tokens whatever else is in
/// the batch). Log-probabilities are those of the model's raw distribution, as vLLM reports by default. A batch
/// whose sequences are all plain greedy never needs its logits on the host: <see cref="IsPlainGreedy"/> lets the
/// model runner read back only the argmax of each row.
/// </summary>
internal sealed class Sampler(int vocabSize)
{
    private readonly float[] _row = new float[vocabSize];
    private readonly int[] _order = new int[vocabSize];
    private readonly float[] _keys = new float[vocabSize];
    private readonly ulong[] _allowed = new ulong[(vocabSize + 63) / 64];

    /// <summary>True when the token is simply the row's argmax: nothing to apply, no logprobs.</summary>
    public static bool IsPlainGreedy(ISamplingState state)
    {
        var p = state.Params;
        return p.IsGreedy && !p.Logprobs && p.TopLogprobs == 0 && p.LogitBias.Count == 0 && p.RepetitionPenalty == 1.0
            && p.PresencePenalty == 0 && p.FrequencyPenalty == 0 && state.Suppressed.Count == 0 && state.Constraint is null;
    }

    public (int Token, TokenLogprob? Logprob) Sample(ReadOnlySpan<float> logits, ISamplingState state)
    {
        if (IsPlainGreedy(state))
        {
            return (TensorPrimitives.IndexOfMax(logits), null);
        }
        var p = state.Params;
        var row = _row.AsSpan(0, logits.Length);
        logits.CopyTo(row);
        Process(row, state);

        int token;
        if (p.IsGreedy)
        {
            token = TensorPrimitives.IndexOfMax<float>(row);
        }
        else
        {
            token = Draw(row, p, state.Random ?? System.Random.Shared);
        }
        var logprob = p.Logprobs || p.TopLogprobs > 0 ? Logprob(logits, token, p.TopLogprobs) : null;
        return (token, logprob);
    }

    /// <summary>The token's log-probability under the raw logits and the <paramref name="top"/> most likely alternatives.</summary>
    public TokenLogprob Logprob(ReadOnlySpan<float> logits, int token, int top)
    {
        var normaliser = LogSumExp(logits);
        var alternatives = new List<(int, double)>(top);
        foreach (var id in TopIndices(logits, top))
        {
            alternatives.Add((id, logits[id] - normaliser));
        }
        return new TokenLogprob(token, logits[token] - normaliser, alternatives);
    }

    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        var max = TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (var value in logits)
        {
            sum += Math.Exp(value - max);
        }
        return max + Math.Log(sum);
    }

    /// <summary>Bias, penalties, suppression and the constraint's mask, applied in place to a copy of the row.</summary>
    private void Process(Span<float> row, ISamplingState state)
    {
        var p = state.Params;
        foreach (var (id, bias) in p.LogitBias)
        {
            row[id] += (float)bias;
        }
        if (p.RepetitionPenalty != 1.0)
        {
            foreach (var id in state.PromptTokenIds.Concat(state.OutputTokenIds).Distinct())
            {
                row[id] = row[id] > 0 ? (float)(row[id] / p.RepetitionPenalty) : (float)(row[id] * p.RepetitionPenalty);
            }
        }
        if ((p.PresencePenalty != 0 || p.FrequencyPenalty != 0) && state.OutputTokenIds.Count > 0)
        {
            foreach (var group in state.OutputTokenIds.GroupBy(t => t))
            {
                row[group.Key] -= (float)(p.FrequencyPenalty * group.Count() + p.PresencePenalty);
            }
        }
        foreach (var id in state.Suppressed)
        {
            row[id] = float.NegativeInfinity;
        }
        if (state.Constraint is { } constraint)
        {
            Mask(row, constraint, state.StopTokenIds);
        }
    }

    /// <summary>Only what the constraint allows; end-of-sequence exactly when it is complete.</summary>
    private void Mask(Span<float> row, ITokenConstraint constraint, IReadOnlySet<int> stopIds)
    {
        Array.Clear(_allowed);
        if (constraint.FillAllowed(_allowed))
        {
            for (var id = 0; id < row.Length; id++)
            {
                if ((_allowed[id >> 6] & (1UL << (id & 63))) == 0 && !stopIds.Contains(id))
                {
                    row[id] = float.NegativeInfinity;
                }
            }
        }
        if (!constraint.CanEnd)
        {
            foreach (var id in stopIds)
            {
                if (id < row.Length)
                {
                    row[id] = float.NegativeInfinity;
                }
            }
        }
        if (TensorPrimitives.Max<float>(row) == float.NegativeInfinity)
        {
            throw new InvalidOperationException("the output constraint allows no token here");
        }
    }

    /// <summary>softmax(row / T), then top-k, top-p (within the top k) and min-p, and one draw.</summary>
    private int Draw(Span<float> row, SamplingParams p, Random random)
    {
        var max = TensorPrimitives.Max<float>(row);
        var inverseTemperature = (float)(1.0 / p.Temperature);
        for (var i = 0; i < row.Length; i++)
        {
            row[i] = MathF.Exp((row[i] - max) * inverseTemperature); // unnormalised probabilities; −∞ → 0
        }
        var candidates = row.Length;
        var order = _order.AsSpan(0, row.Length);
        var needsOrder = (p.TopK > 0 && p.TopK < row.Length) || p.TopP < 1.0;
        if (needsOrder)
        {
            candidates = SortDescending(row, order, p.TopK > 0 ? Math.Min(p.TopK, row.Length) : row.Length);
        }
        else
        {
            for (var i = 0; i < order.Length; i++)
            {
                order[i] = i;
            }
        }
        double total = 0;
        for (var i = 0; i < candidates; i++)
        {
            total += row[order[i]];
        }
        if (p.TopP < 1.0)
        {
            // The smallest prefix of the sorted candidates whose mass reaches top_p (measured within the top k).
            double before = 0;
            var kept = 0;
            while (kept < candidates && before < p.TopP * total)
            {
                before += row[order[kept]];
                kept++;
            }
            candidates = Math.Max(kept, 1);
            total = before;
        }
        if (p.MinP > 0)
        {
            var best = TensorPrimitives.Max<float>(row);
            var threshold = best * p.MinP;
            total = 0;
            var kept = 0;
            for (var i = 0; i < candidates; i++)
            {
                if (row[order[i]] >= threshold)
                {
                    order[kept++] = order[i];
                    total += row[order[i]];
                }
            }
            candidates = kept;
        }
        var target = random.NextDouble() * total;
        double cumulative = 0;
        for (var i = 0; i < candidates; i++)
        {
            cumulative += row[order[i]];
            if (cumulative > target)
            {
                return order[i];
            }
        }
        return order[candidates - 1];
    }

    /// <summary>
    /// Puts the entries of <paramref name="values"/> in <paramref name="order"/> largest first and returns how many of
    /// the first <paramref name="count"/> are non-zero (at least one).
    /// </summary>
    private int SortDescending(Span<float> values, Span<int> order, int count)
    {
        var keys = _keys.AsSpan(0, values.Length);
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
            keys[i] = -values[i];
        }
        keys.Sort(order);
        var nonZero = 0;
        while (nonZero < count && values[order[nonZero]] > 0)
        {
            nonZero++;
        }
        return Math.Max(nonZero, 1);
    }

    /// <summary>Indices of the <paramref name="count"/> largest values, largest first.</summary>
    public static int[] TopIndices(ReadOnlySpan<float> values, int count)
    {
        if (count <= 0)
        {
            return [];
        }
        var best = new List<int>(count + 1);
        for (var i = 0; i < values.Length; i++)
        {
            if (best.Count == count && values[i] <= values[best[^1]])
            {
                continue;
            }
            var at = best.Count;
            while (at > 0 && values[best[at - 1]] < values[i])
            {
                at--;
            }
            best.Insert(at, i);
            if (best.Count > count)
            {
                best.RemoveAt(count);
            }
        }
        return [.. best];
    }
}
