namespace RecurFormer.Engine.Requests;

/// <summary>How tokens are chosen and when generation stops, per request (OpenAI and vLLM parameters).</summary>
public sealed record SamplingParams
{
    /// <summary>0 = greedy.</summary>
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    /// <summary>0 or -1 = off.</summary>
    public int TopK { get; init; }
    public double MinP { get; init; }
    public long? Seed { get; init; }
    public double PresencePenalty { get; init; }
    public double FrequencyPenalty { get; init; }
    /// <summary>1 = off; HuggingFace/vLLM style: positive logits of seen tokens divided by it, negative multiplied.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    public IReadOnlyDictionary<int, double> LogitBias { get; init; } = new Dictionary<int, double>();

    /// <summary>Return the sampled token's log-probability (of the model's distribution).</summary>
    public bool Logprobs { get; init; }
    /// <summary>How many most likely alternatives to return with each token (0..20).</summary>
    public int TopLogprobs { get; init; }

    /// <summary>
    /// Log-probabilities of the prompt's own tokens (vLLM's <c>prompt_logprobs</c>, OpenAI's <c>echo</c> with
    /// <c>logprobs</c>): null = off, otherwise how many most likely alternatives to add per position (0..20).
    /// Computed in the prefill and reported once, as a <see cref="PromptLogprobsEvent"/>, before the first token.
    /// </summary>
    public int? PromptLogprobs { get; init; }

    public int MaxTokens { get; init; } = 16;
    public int MinTokens { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];
    public bool IgnoreEos { get; init; }

    /// <summary>Choices generated from one prompt; they share its prefill.</summary>
    public int N { get; init; } = 1;

    /// <summary>The most choices one request may ask for.</summary>
    public const int MaxChoices = 128;

    public bool IsGreedy => Temperature <= 0;

    /// <summary>Checks ranges; returns the first problem as (parameter, message), or null.</summary>
    public (string Param, string Message)? Validate(int vocabSize)
    {
        if (double.IsNaN(Temperature) || Temperature < 0 || Temperature > 100) return ("temperature", $"temperature must be between 0 and 100, got {Temperature}");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1) return ("top_p", $"top_p must be in (0, 1], got {TopP}");
        if (TopK < -1) return ("top_k", $"top_k must be -1 (off), 0 (off) or positive, got {TopK}");
        if (double.IsNaN(MinP) || MinP < 0 || MinP > 1) return ("min_p", $"min_p must be in [0, 1], got {MinP}");
        if (double.IsNaN(PresencePenalty) || PresencePenalty < -2 || PresencePenalty > 2) return ("presence_penalty", $"presence_penalty must be between -2 and 2, got {PresencePenalty}");
        if (double.IsNaN(FrequencyPenalty) || FrequencyPenalty < -2 || FrequencyPenalty > 2) return ("frequency_penalty", $"frequency_penalty must be between -2 and 2, got {FrequencyPenalty}");
        if (double.IsNaN(RepetitionPenalty) || RepetitionPenalty <= 0 || RepetitionPenalty > 10) return ("repetition_penalty", $"repetition_penalty must be in (0, 10], got {RepetitionPenalty}");
        if (TopLogprobs < 0 || TopLogprobs > 20) return ("top_logprobs", $"top_logprobs must be between 0 and 20, got {TopLogprobs}");
        if (PromptLogprobs is < 0 or > 20) return ("prompt_logprobs", $"prompt_logprobs must be between 0 and 20, got {PromptLogprobs}");
        if (MaxTokens < 1) return ("max_tokens", $"max_tokens must be at least 1, got {MaxTokens}");
        if (MinTokens < 0 || MinTokens > MaxTokens) return ("min_tokens", $"min_tokens must be between 0 and max_tokens ({MaxTokens}), got {MinTokens}");
        if (N < 1 || N > MaxChoices) return ("n", $"n must be between 1 and {MaxChoices}, got {N}");
        if (Stop.Count > 16) return ("stop", $"at most 16 stop sequences, got {Stop.Count}");
        if (Stop.Any(string.IsNullOrEmpty)) return ("stop", "stop sequences must not be empty");
        foreach (var (token, bias) in LogitBias)
        {
            if (token < 0 || token >= vocabSize) return ("logit_bias", $"logit_bias names token {token}, outside the vocabulary (0..{vocabSize - 1})");
            if (double.IsNaN(bias) || bias < -100 || bias > 100) return ("logit_bias", $"logit_bias values must be between -100 and 100, got {bias} for token {token}");
        }
        foreach (var token in StopTokenIds)
        {
            if (token < 0 || token >= vocabSize) return ("stop_token_ids", $"stop_token_ids names token {token}, outside the vocabulary (0..{vocabSize - 1})");
        }
        return null;
    }
}
