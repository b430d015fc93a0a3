using RecurFormer.Tokenization;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// Stage 2's weight per position: the positions that predict the first <see cref="Tokens"/> tokens of an assistant
/// answer (those after <see cref="Marker"/>, up to and including its end token) weigh <see cref="Weight"/>, every
/// other position 1. Greedy question answering is lost to one different token, and a converted model's answers part
/// from its teacher's within their first few tokens (<c>eval --baseline</c>'s qa_agreement: median token 4 for the
/// 25% Mamba model). With 16 tokens they are 11% of the positions of dotnet-docs' training stream (its first 2,000
/// sequences of 256), so a weight of 8 gives them half of the loss. A sequence that starts inside an answer (its
/// marker at the end of the sequence before) gives that answer no weight.
/// </summary>
public sealed record AnswerWeighting(long[] Marker, long End, int Tokens, float Weight)
{
    /// <summary>The weighting <paramref name="options"/> ask for, with the marker and end token of the tokenizer's chat template; null when off.</summary>
    public static AnswerWeighting? For(CheckpointTokenizer tokenizer, DistillOptions options)
    {
        if (options.AnswerWeight == 1 || options.AnswerTokens == 0)
        {
            return null;
        }
        if (!tokenizer.TryGetTokenId("<|im_end|>", out var end))
        {
            throw new ArgumentException("answer weighting needs a ChatML tokenizer (<|im_end|> ends an answer)");
        }
        var marker = tokenizer.Encode(Evaluation.Evaluator.AssistantPrompt, addBosToken: false).Select(t => (long)t).ToArray();
        return new AnswerWeighting(marker, end, options.AnswerTokens, (float)options.AnswerWeight);
    }

    /// <summary>One weight per position of <paramref name="sequence"/>: position t predicts token t + 1.</summary>
    public float[] Of(long[] sequence)
    {
        var weights = new float[sequence.Length];
        Array.Fill(weights, 1f);
        for (var last = Marker.Length - 1; last < sequence.Length; last++)
        {
            if (!sequence.AsSpan(last - Marker.Length + 1, Marker.Length).SequenceEqual(Marker))
            {
                continue;
            }
            // The marker's last token predicts the answer's first; weigh until the answer's end is predicted.
            for (var t = last; t < sequence.Length && t - last < Tokens; t++)
            {
                weights[t] = Weight;
                if (t + 1 < sequence.Length && sequence[t + 1] == End)
                {
                    break;
                }
            }
        }
        return weights;
    }
}
