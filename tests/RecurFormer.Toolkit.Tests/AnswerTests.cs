using RecurFormer.Model.CausalLM;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Distillation;
using RecurFormer.Toolkit.Evaluation;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

/// <summary>
/// Answers of the demo teacher: where two answer lists part (<see cref="AnswerAgreement"/>), and stage 2's weights of
/// answer positions (<see cref="AnswerWeighting"/>).
/// </summary>
public sealed class AnswerTests
{
    private static readonly string Teacher = Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-qwen2-16m");
    private static readonly string Validation = Path.Combine(TestData.RepositoryRoot, "tests", "RecurFormer.Tokenization.Tests", "Data", "validation.jsonl");

    public AnswerTests() => TestData.EnsureTorch();

    [Fact]
    public void Agreement_finds_where_answers_part_and_the_baselines_margin_there()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        using var teacher = TestData.Load(Teacher);
        var questions = ValidationExample.ReadAll(new JsonlReader(Validation)).Where(e => e.Kind == ValidationExample.Qa).Take(4).ToArray();
        var evaluator = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 12, BatchSize = 4 });
        evaluator.Evaluate(questions);
        var baseline = evaluator.Answers.ToArray();
        Assert.Equal(questions.Select(q => q.Line), baseline.Select(a => a.Line));
        Assert.All(baseline, a => Assert.True(a.Tokens.Length >= 4, "every answer of the teacher runs at least 4 tokens"));

        // A model that differs: its first answer takes another token at index 2, its second stops after 3 tokens.
        var other = baseline[0].Tokens[2] == 11 ? 12L : 11L;
        GeneratedAnswer[] model =
        [
            baseline[0] with { Tokens = [.. baseline[0].Tokens[..2], other, .. baseline[0].Tokens[3..]], Exact = false },
            baseline[1] with { Tokens = baseline[1].Tokens[..3], Exact = !baseline[1].Exact },
            baseline[2], baseline[3],
        ];
        var stops = Evaluator.StopIds(teacher, tokenizer);
        var agreement = AnswerAgreement.Of(model, baseline, teacher, stops, batchSize: 2);

        Assert.Equal(4, agreement["questions"]!.GetValue<int>());
        Assert.Equal(2, agreement["identical"]!.GetValue<int>());
        Assert.Equal(2, agreement["diverged"]!.GetValue<int>());
        Assert.Equal(1, agreement["model_stopped_first"]!.GetValue<int>());
        Assert.Equal(0, agreement["baseline_stopped_first"]!.GetValue<int>());
        Assert.Equal((baseline[0].Exact ? 1 : 0) + (baseline[1].Exact ? 1 : 0), agreement["lost"]!.GetValue<int>());
        Assert.Equal(baseline[1].Exact ? 0 : 1, agreement["gained"]!.GetValue<int>());
        Assert.Equal(2.0, agreement["divergence_token"]!["p25"]!.GetValue<double>());
        Assert.Equal(3.0, agreement["divergence_token"]!["p75"]!.GetValue<double>());

        // The baseline's tokens where the answers part, and all its answer tokens: how many the prompt holds.
        bool[] parting = [baseline[0].Prompt.Contains(baseline[0].Tokens[2]), baseline[1].Prompt.Contains(baseline[1].Tokens[3])];
        Assert.Equal(parting.Count(p => p) / 2.0, agreement["baseline_token_in_prompt"]!.GetValue<double>(), 4);
        var tokens = baseline.SelectMany(b => b.Tokens.Select(t => b.Prompt.Contains(t))).ToArray();
        Assert.Equal(tokens.Count(p => p) / (double)tokens.Length, agreement["answer_tokens_in_prompt"]!.GetValue<double>(), 4);
        Assert.InRange(tokens.Count(p => p), 1, tokens.Length - 1);   // answers copy some tokens from the question, not all

        // The margins, from the teacher's own logits over the shared prefix.
        float[] Next(GeneratedAnswer answer, int position)
        {
            using var logits = TestData.AllLogits(teacher, [.. answer.Prompt, .. answer.Tokens[..position]]);
            using var last = nn.functional.softmax(logits[-1], 0);
            return last.data<float>().ToArray();
        }
        var first = Next(baseline[0], 2);
        var second = Next(baseline[1], 3);
        double[] expected =
        [
            first[baseline[0].Tokens[2]] - first[other],
            second[baseline[1].Tokens[3]] - stops.Max(id => (double)second[id]),
        ];
        Assert.All(expected, m => Assert.True(m > 0, $"the teacher prefers its own greedy token (margin {m})"));
        var margins = agreement["baseline_margin"]!;
        Assert.Equal(expected.Min(), margins["p25"]!.GetValue<double>(), 3);
        Assert.Equal(expected.Max(), margins["p75"]!.GetValue<double>(), 3);
    }

    [Fact]
    public void Answer_weights_cover_an_answers_first_tokens_up_to_its_end()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        var weighting = AnswerWeighting.For(tokenizer, new DistillOptions { AnswerWeight = 5, AnswerTokens = 4 })!;
        Assert.Null(AnswerWeighting.For(tokenizer, new DistillOptions()));
        long[] Encode(string text) => tokenizer.Encode(text, addBosToken: false).Select(t => (long)t).ToArray();

        var question = Encode("<|im_start|>user\nWhat is X?<|im_end|>\n" + Evaluator.AssistantPrompt);
        var longAnswer = Encode("Gets the value of the current instance.<|im_end|>\n");
        var shortAnswer = Encode("Yes<|im_end|>\n");
        long[] sequence = [.. Encode("Some doc text."), .. question, .. longAnswer, .. question, .. shortAnswer];
        var weights = weighting.Of(sequence);

        Assert.Equal(sequence.Length, weights.Length);
        var first = Encode("Some doc text.").Length + question.Length - 1;        // predicts the first answer's first token
        var second = first + longAnswer.Length + question.Length;
        var expected = Enumerable.Repeat(1f, sequence.Length).ToArray();
        for (var t = first; t < first + 4; t++)
        {
            expected[t] = 5;
        }
        var end = Array.IndexOf(sequence, tokenizer.TryGetTokenId("<|im_end|>", out var id) ? (long)id : -1, second);
        for (var t = second; t < end; t++)                                          // a short answer: up to its end token
        {
            expected[t] = 5;
        }
        Assert.True(end - second < 4, "the short answer ends within the weighted tokens");
        Assert.Equal(expected, weights);
    }
}
