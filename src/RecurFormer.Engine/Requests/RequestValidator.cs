using RecurFormer.Engine.Caching;

namespace RecurFormer.Engine.Requests;

/// <summary>
/// Refuses, at submission, what the engine could never serve: an empty prompt, ids outside the vocabulary, sampling
/// parameters out of range, and sequences longer than the model or the whole cache budget allows.
/// </summary>
internal sealed class RequestValidator(int vocabSize, int maxModelLen, HybridCacheManager cache)
{
    public void Validate(GenerationRequest request)
    {
        var prompt = request.PromptTokenIds;
        if (prompt.Count == 0)
        {
            throw new EngineRequestException("prompt", "the prompt is empty");
        }
        var outside = prompt.Where(id => id < 0 || id >= vocabSize).Select(id => (int?)id).FirstOrDefault();
        if (outside is not null)
        {
            throw new EngineRequestException("prompt", $"token id {outside} is outside the vocabulary (0..{vocabSize - 1})");
        }
        if (request.Sampling.Validate(vocabSize) is { } problem)
        {
            throw new EngineRequestException(problem.Param, problem.Message);
        }
        var total = (long)prompt.Count + request.Sampling.MaxTokens;
        if (total > maxModelLen)
        {
            throw new EngineRequestException("max_tokens",
                $"This model's maximum context length is {maxModelLen} tokens. However, you requested {total} tokens ({prompt.Count} in the prompt, {request.Sampling.MaxTokens} in the completion). Please reduce the length of the prompt or the completion.",
                "context_length_exceeded");
        }
        if (!cache.CouldEverFit((int)total))
        {
            throw new EngineRequestException("max_tokens",
                $"a sequence of {total} tokens needs {cache.Layout.SequenceBytes((int)total):N0} bytes of cache, more than the whole cache budget ({cache.BudgetBytes:N0} bytes)",
                "context_length_exceeded");
        }
    }
}
