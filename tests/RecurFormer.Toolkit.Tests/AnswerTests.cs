using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Distillation;
using RecurFormer.Toolkit.Evaluation;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

/// <summary>
/// Answers of the demo teacher: where two answer lists part (<see cref="AnswerAgreement"/>), stage 2's weights of
/// answer positions (<see cref="AnswerWeighting"/>), the training conversations rewritten with the teacher's answers
/// (<see cref="TeacherAnswers"/>), and the evaluator's report where it answered nothing.
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
        var evaluator = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 96, BatchSize = 4 });
        evaluator.Evaluate(questions);
        Assert.Equal(questions.Select(q => q.Line), evaluator.Answers.Select(a => a.Line));
        Assert.All(evaluator.Answers, a => Assert.True(a.Tokens.Length is >= 4 and < 96, "every answer of the teacher runs at least 4 tokens and stops"));
        // Exact flags set here, so that the counts below are known: the baseline answered the first three exactly.
        var baseline = evaluator.Answers.Select((a, i) => a with { Exact = i < 3 }).ToArray();

        // A model that differs: its first answer takes another token at index 2 (a lost exact match), its second stops
        // after 3 tokens (lost too), its third runs on by one token after the baseline's end (still exact: the score
        // is the model's to keep), its fourth is the baseline's (and exact where the baseline was not: gained).
        var other = baseline[0].Tokens[2] == 11 ? 12L : 11L;
        var extra = baseline[2].Tokens[0];
        GeneratedAnswer[] model =
        [
            baseline[0] with { Tokens = [.. baseline[0].Tokens[..2], other, .. baseline[0].Tokens[3..]], Exact = false },
            baseline[1] with { Tokens = baseline[1].Tokens[..3], Exact = false },
            baseline[2] with { Tokens = [.. baseline[2].Tokens, extra] },
            baseline[3] with { Exact = true },
        ];
        var stops = Evaluator.StopIds(teacher, tokenizer);
        var agreement = AnswerAgreement.Of(model, baseline, teacher, stops, batchSize: 2);

        Assert.Equal(4, agreement["questions"]!.GetValue<int>());
        Assert.Equal(1, agreement["identical"]!.GetValue<int>());
        Assert.Equal(3, agreement["diverged"]!.GetValue<int>());
        Assert.Equal(1, agreement["both_exact"]!.GetValue<int>());
        Assert.Equal(2, agreement["lost"]!.GetValue<int>());
        Assert.Equal(1, agreement["gained"]!.GetValue<int>());
        Assert.Equal(1, agreement["model_stopped_first"]!.GetValue<int>());
        Assert.Equal(1, agreement["baseline_stopped_first"]!.GetValue<int>());
        Assert.Equal(2.0, agreement["divergence_token"]!["p25"]!.GetValue<double>());
        Assert.Equal(3.0, agreement["divergence_token"]!["median"]!.GetValue<double>());
        Assert.Equal(baseline[2].Tokens.Length, agreement["divergence_token"]!["p75"]!.GetValue<double>());

        // The baseline's tokens where the answers part (not where it stopped), and all its answer tokens: how many the prompt holds.
        bool[] parting = [baseline[0].Prompt.Contains(baseline[0].Tokens[2]), baseline[1].Prompt.Contains(baseline[1].Tokens[3])];
        Assert.Equal(parting.Count(p => p) / 2.0, agreement["baseline_token_in_prompt"]!.GetValue<double>(), 4);
        var tokens = baseline.SelectMany(b => b.Tokens.Select(t => b.Prompt.Contains(t))).ToArray();
        Assert.Equal(tokens.Count(p => p) / (double)tokens.Length, agreement["answer_tokens_in_prompt"]!.GetValue<double>(), 4);
        Assert.InRange(tokens.Count(p => p), 1, tokens.Length - 1);   // answers copy some tokens from the question, not all
        double AtPosition(int k) => baseline.Where(b => b.Tokens.Length > k).Average(b => b.Prompt.Contains(b.Tokens[k]) ? 1.0 : 0.0);
        Assert.Equal((AtPosition(2) + AtPosition(3)) / 2, agreement["answer_tokens_in_prompt_at_those_positions"]!.GetValue<double>(), 4);

        // The margins, from the teacher's own logits over the shared prefix: its token (or its most likely stop) minus the model's.
        float[] Next(GeneratedAnswer answer, int position)
        {
            using var logits = TestData.AllLogits(teacher, [.. answer.Prompt, .. answer.Tokens[..position]]);
            using var last = nn.functional.softmax(logits[-1], 0);
            return last.data<float>().ToArray();
        }
        double Stop(float[] p) => stops.Max(id => (double)p[id]);
        var first = Next(baseline[0], 2);
        var second = Next(baseline[1], 3);
        var third = Next(baseline[2], baseline[2].Tokens.Length);
        double[] lost = [first[baseline[0].Tokens[2]] - first[other], second[baseline[1].Tokens[3]] - Stop(second)];
        var ranOn = Stop(third) - third[extra];
        Assert.All(lost.Append(ranOn), m => Assert.True(m > 0, $"the teacher prefers its own greedy choice (margin {m})"));
        double[] all = [.. lost, ranOn];
        Array.Sort(all);
        var margins = agreement["baseline_margin"]!;
        Assert.Equal(all[0], margins["p25"]!.GetValue<double>(), 3);
        Assert.Equal(all[1], margins["median"]!.GetValue<double>(), 3);
        Assert.Equal(all[2], margins["p75"]!.GetValue<double>(), 3);
        Assert.Equal(0.0, margins["below_0"]!.GetValue<double>());
        var lostMargins = agreement["lost_baseline_margin"]!;
        Assert.Equal(2, lostMargins["count"]!.GetValue<int>());
        Assert.Equal(lost.Min(), lostMargins["p25"]!.GetValue<double>(), 3);
        Assert.Equal(lost.Max(), lostMargins["p75"]!.GetValue<double>(), 3);
    }

    [Fact]
    public void Answer_weights_cover_an_answers_first_tokens_up_to_its_end()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        var weighting = AnswerWeighting.For(tokenizer, new DistillOptions { AnswerWeight = 5, AnswerTokens = 4 })!;
        Assert.Null(AnswerWeighting.For(tokenizer, new DistillOptions()));
        long[] Encode(string text) => tokenizer.Encode(text, addBosToken: false).Select(t => (long)t).ToArray();
        var end = tokenizer.TryGetTokenId("<|im_end|>", out var id) ? id : throw new InvalidOperationException("no <|im_end|>");

        // Two conversations after a doc line, tokenized as one text (as the training stream is).
        const string question = "<|im_start|>user\nWhat is X?<|im_end|>\n" + Evaluator.AssistantPrompt;
        var sequence = Encode("Some doc text.<|endoftext|>" + question + "Gets the value of the current instance.<|im_end|>\n<|endoftext|>"
            + question + "Yes<|im_end|>\n");
        var weights = weighting.Of(sequence);

        // Where the marker's last token is, found independently: the positions right before each answer's first token.
        var marker = weighting.Marker;
        var ends = Enumerable.Range(marker.Length - 1, sequence.Length - marker.Length + 1)
            .Where(t => sequence.AsSpan(t - marker.Length + 1, marker.Length).SequenceEqual(marker)).ToArray();
        Assert.Equal(2, ends.Length);
        var expected = Enumerable.Repeat(1f, sequence.Length).ToArray();
        for (var t = ends[0]; t < ends[0] + 4; t++)                                  // a long answer: its first 4 tokens
        {
            expected[t] = 5;
        }
        var shortEnd = Array.IndexOf(sequence, (long)end, ends[1]);
        Assert.True(shortEnd - ends[1] < 4, "the short answer ends within the weighted tokens");
        for (var t = ends[1]; t < shortEnd; t++)                                      // a short one: up to its end token
        {
            expected[t] = 5;
        }
        Assert.Equal(expected, weights);

        // A marker at the very end weighs its own position only; a sequence cut inside an answer gives it nothing.
        long[] cut = [.. sequence[..(ends[0] + 1)]];
        Assert.Equal([.. Enumerable.Repeat(1f, cut.Length - 1), 5f], weighting.Of(cut));
        Assert.All(weighting.Of(sequence[(ends[0] + 1)..(ends[1] - marker.Length + 1)]), w => Assert.Equal(1f, w));
        // More answer tokens than the sequence holds: up to its end, no further.
        var long_ = new AnswerWeighting(marker, end, int.MaxValue, 2).Of(cut);
        Assert.Equal(2f, long_[^1]);
    }

    [Fact]
    public void Teacher_answers_put_the_teachers_greedy_answer_in_place_of_each_conversations_own()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        using var teacher = TestData.Load(Teacher);
        var lines = ValidationExample.ReadAll(new JsonlReader(Validation));
        var questions = lines.Where(e => e.Kind == ValidationExample.Qa).Take(4).ToArray();
        var evaluator = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 96, BatchSize = 4 });
        evaluator.Evaluate(questions);

        // A doc line first (left out), the four conversations as one batch (as the evaluator decoded them), and a fifth
        // conversation past the limit.
        string[] texts = [lines.First(e => e.Kind == ValidationExample.Doc).Text, .. questions.Select(q => q.Text), lines.Last(e => e.Kind == ValidationExample.Qa).Text];
        var output = new StringWriter();
        var counts = new TeacherAnswers(teacher, tokenizer, maxAnswerTokens: 96, batchSize: 4).Write(texts, output, limit: 4);

        var written = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!["text"]!.GetValue<string>()).ToArray();
        Assert.Equal(4, written.Length);
        var same = 0;
        for (var i = 0; i < 4; i++)
        {
            var answer = tokenizer.Decode(evaluator.Answers[i].Tokens.Select(t => (int)t).ToArray(), skipSpecialTokens: true);
            var reference = questions[i].Text[Evaluator.Prompt(questions[i].Text).Length..questions[i].Text.LastIndexOf("<|im_end|>", StringComparison.Ordinal)];
            Assert.Equal(Evaluator.Prompt(questions[i].Text) + answer + "<|im_end|>\n<|endoftext|>", written[i]);
            same += answer == reference ? 1 : 0;
        }
        Assert.Equal(new TeacherAnswerCounts(Conversations: 4, SameAsBefore: same, Rewritten: 4 - same, Dropped: 0, OtherLines: 1), counts);
        Assert.InRange(same, 1, 3);   // the teacher repeats some reference answers and not others: both branches are counted

        // Answers cut off by the token limit are left out: the teacher's all run longer than 3 tokens.
        var cut = new StringWriter();
        Assert.Equal(new TeacherAnswerCounts(4, 0, 0, 4, 0), new TeacherAnswers(teacher, tokenizer, 3, 4).Write(questions.Select(q => q.Text), cut));
        Assert.Equal("", cut.ToString());

        // Only the first assistant turn changes; text without a complete one is not a conversation.
        const string twoTurns = "<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n<|im_start|>user\nC?<|im_end|>\n<|im_start|>assistant\nD<|im_end|>\n";
        Assert.Equal(twoTurns.Replace("\nB<", "\nE<"), TeacherAnswers.WithAnswer(twoTurns, "E"));
        Assert.Null(TeacherAnswers.WithAnswer("System.Object.ToString\nReturns a string.<|endoftext|>", "E"));
        Assert.Null(TeacherAnswers.WithAnswer("<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB", "E"));
    }

    [Fact]
    public void Each_line_is_scored_and_a_qa_lines_answer_tokens_also_on_their_own()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        using var teacher = TestData.Load(Teacher);
        var all = ValidationExample.ReadAll(new JsonlReader(Validation));
        ValidationExample[] lines = [.. all.Where(e => e.Kind == ValidationExample.Doc).Take(2), .. all.Where(e => e.Kind == ValidationExample.Qa).Take(3)];
        var evaluator = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 0, BatchSize = 2 });
        var report = evaluator.Evaluate(lines);

        Assert.Equal(lines.Select(l => (l.Line, l.Kind)), evaluator.Lines.Select(l => (l.Line, l.Kind)));
        foreach (var (line, score) in lines.Zip(evaluator.Lines))
        {
            var tokens = tokenizer.Encode(line.Text, addBosToken: false).Count();
            Assert.Equal(tokens, score.Tokens);   // every token of the line is predicted, after one separator
            // A qa line's answer: the tokens after its prompt (the system and user turns and the assistant's header).
            var expected = line.Kind == ValidationExample.Qa ? tokens - Evaluator.PromptTokens(tokenizer, line.Text).Length : 0;
            Assert.Equal(expected, score.AnswerTokens);
            Assert.InRange(score.AnswerNll, 0, score.Nll);
        }
        Assert.All(evaluator.Lines.Where(l => l.Kind == ValidationExample.Qa), l => Assert.InRange(l.AnswerTokens, 4, l.Tokens - 10));

        // The first question's answer NLL from the teacher's logits over the whole line: the last AnswerTokens targets.
        var (question, scored) = (lines[2], evaluator.Lines[2]);
        Assert.True(tokenizer.TryGetTokenId("<|endoftext|>", out var separator));
        long[] ids = [separator, .. tokenizer.Encode(question.Text, addBosToken: false).Select(t => (long)t)];
        using (var logits = TestData.AllLogits(teacher, ids))
        using (var logProbabilities = nn.functional.log_softmax(logits.to_type(ScalarType.Float64), 1))
        {
            var answerNll = 0.0;
            for (var position = ids.Length - scored.AnswerTokens; position < ids.Length; position++)
            {
                answerNll -= logProbabilities[position - 1, ids[position]].item<double>();
            }
            Assert.Equal(answerNll, scored.AnswerNll, 1e-3 * scored.AnswerTokens);
        }

        // The report's figures are these lines' sums.
        double Perplexity(IEnumerable<LineScore> scores, Func<LineScore, double> nll, Func<LineScore, int> count) =>
            Math.Exp(scores.Sum(nll) / scores.Sum(count));
        var qa = evaluator.Lines.Where(l => l.Kind == ValidationExample.Qa).ToArray();
        Assert.Equal(Perplexity(evaluator.Lines, l => l.Nll, l => l.Tokens), report["perplexity"]!["all"]!.GetValue<double>(), 9);
        Assert.Equal(Perplexity(qa, l => l.Nll, l => l.Tokens), report["perplexity"]!["qa"]!.GetValue<double>(), 9);
        Assert.Equal(Perplexity(qa, l => l.AnswerNll, l => l.AnswerTokens), report["perplexity"]!["qa_answer"]!.GetValue<double>(), 9);
        Assert.Equal(qa.Sum(l => l.AnswerTokens), report["tokens"]!["qa_answer"]!.GetValue<long>());
    }

    [Fact]
    public void An_evaluation_without_questions_or_without_docs_reports_null_for_what_it_did_not_measure()
    {
        var tokenizer = CheckpointTokenizer.FromPretrained(Teacher);
        using var teacher = TestData.Load(Teacher);
        var docs = ValidationExample.ReadAll(new JsonlReader(Validation)).Where(e => e.Kind == ValidationExample.Doc).Take(3).ToArray();
        var report = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 0 }).Evaluate(docs);

        Assert.True(report["perplexity"]!["doc"]!.GetValue<double>() > 1);
        Assert.Null(report["qa"]!["exact_match"]);
        Assert.Null(report["qa"]!["token_f1"]);
        var json = report.ToJsonString();   // NaN has no JSON form: this threw before
        Assert.Contains("\"qa\":null", json);            // perplexity of the qa lines: there are none
        Assert.Contains("\"exact_match\":null", json);   // present, and null
        Assert.Null(EvalComparison.Get(report, "qa.exact_match"));

        // Questions only, with question answering off: the doc lines' perplexity is the one not measured.
        var questions = ValidationExample.ReadAll(new JsonlReader(Validation)).Where(e => e.Kind == ValidationExample.Qa).Take(2).ToArray();
        var onlyQuestions = new Evaluator(teacher, tokenizer, new EvalOptions { MaxAnswerTokens = 0 }).Evaluate(questions);
        Assert.True(onlyQuestions["perplexity"]!["qa"]!.GetValue<double>() > 1);
        Assert.Contains("\"doc\":null", onlyQuestions.ToJsonString());
    }
}
