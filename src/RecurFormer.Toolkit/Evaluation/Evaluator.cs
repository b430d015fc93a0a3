using System.Diagnostics;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Caching;
using RecurFormer.Model.Configuration;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Data;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Evaluation;

/// <summary>How an evaluation runs.</summary>
public sealed record EvalOptions
{
    /// <summary>Length of the packed sequences (the teacher's training length).</summary>
    public int PackedLength { get; init; } = 512;

    /// <summary>Position buckets of the packed perplexity: [start, end) of the predicted token's position.</summary>
    public IReadOnlyList<(int Start, int End)> Buckets { get; init; } = [(0, 64), (64, 256), (256, 512)];

    /// <summary>Most tokens generated per question; 0 skips question answering (perplexity only).</summary>
    public int MaxAnswerTokens { get; init; } = 96;

    /// <summary>Sequences per forward (lines for perplexity, questions for generation).</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>How many QA generations to keep in the report as samples.</summary>
    public int Samples { get; init; } = 8;
}

/// <summary>
/// Evaluates a causal LM on validation lines: perplexity per kind and overall (each line on its own, after an
/// <c>&lt;|endoftext|&gt;</c> as in the training stream), perplexity over the lines packed into long sequences
/// (by position bucket), greedy question answering (exact match, token F1), and the cache cost.
/// </summary>
public sealed class Evaluator(ICausalLM model, CheckpointTokenizer tokenizer, EvalOptions options)
{
    public const string AssistantPrompt = "<|im_start|>assistant\n";

    private readonly List<GeneratedAnswer> _answers = [];
    private readonly List<LineScore> _lines = [];

    /// <summary>Every greedy answer of the last <see cref="Evaluate"/>, in the order of the qa lines (for <see cref="AnswerAgreement"/>).</summary>
    public IReadOnlyList<GeneratedAnswer> Answers => _answers;

    /// <summary>Every scored line of the last <see cref="Evaluate"/>, in the data's order (for <see cref="PairedComparison"/>).</summary>
    public IReadOnlyList<LineScore> Lines => _lines;

    public JsonObject Evaluate(IReadOnlyList<ValidationExample> examples, IProgress<int>? progress = null)
    {
        var clock = Stopwatch.StartNew();
        var separator = tokenizer.TryGetTokenId("<|endoftext|>", out var id) ? id : model.Config.BosTokenId ?? 0;
        var encoded = examples.Select(e => tokenizer.Encode(e.Text, addBosToken: false).Select(t => (long)t).ToArray()).ToArray();
        var qa = examples.Where(e => e.Kind == ValidationExample.Qa).ToArray();
        var packed = PackedSequences(encoded);
        var work = examples.Count + packed.Count + (options.MaxAnswerTokens == 0 ? 0 : qa.Length);
        var done = 0;
        void Advance(int n)
        {
            done += n;
            progress?.Report(done);
        }

        var nll = new NllAccumulator();
        // Each question's prompt, tokenized once: it marks where a qa line's answer begins, and it is what the model answers.
        var prompts = qa.Distinct().ToDictionary(e => e, e => PromptTokens(tokenizer, e.Text));
        LinePerplexity(examples, encoded, separator, prompts, nll, Advance);
        PackedPerplexity(packed, nll, Advance);
        var (exact, f1, samples) = QuestionAnswering(qa, prompts, Advance);

        var perplexity = new JsonObject
        {
            ["all"] = Measured(nll.Perplexity("all")),
            ["doc"] = Measured(nll.Perplexity(ValidationExample.Doc)),
            ["qa"] = Measured(nll.Perplexity(ValidationExample.Qa)),
            ["qa_answer"] = Measured(nll.Perplexity(QaAnswer)),
            ["packed512"] = Measured(nll.Perplexity("packed")),
            ["packed512_by_position"] = new JsonObject(options.Buckets.Select(b =>
                KeyValuePair.Create($"{b.Start}-{b.End}", Measured(nll.Perplexity(Bucket(b)))))),
        };
        var config = (TransformerConfig)model.Config;
        return new JsonObject
        {
            ["kind"] = KindOf(config),
            ["lines"] = new JsonObject
            {
                ["doc"] = examples.Count(e => e.Kind == ValidationExample.Doc),
                ["qa"] = qa.Length,
            },
            ["tokens"] = new JsonObject
            {
                ["all"] = nll.Tokens("all"),
                ["doc"] = nll.Tokens(ValidationExample.Doc),
                ["qa"] = nll.Tokens(ValidationExample.Qa),
                ["qa_answer"] = nll.Tokens(QaAnswer),
                ["packed512"] = nll.Tokens("packed"),
                ["packed_sequences"] = packed.Count,
            },
            ["perplexity"] = perplexity,
            ["qa"] = new JsonObject
            {
                ["exact_match"] = Measured(exact),
                ["token_f1"] = Measured(f1),
                ["questions"] = qa.Length,
                ["max_answer_tokens"] = options.MaxAnswerTokens,
                ["samples"] = new JsonArray(samples.ToArray()),
            },
            ["cache"] = CacheReport.Of(new CacheLayout(config, CacheLayout.DefaultKvDType(model.Target.DType, model.Target.Device.type))),
            ["compute"] = model.Target.ToString(),
            ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
        };
    }

    /// <summary>
    /// A figure, or JSON null where nothing measured it (no doc lines, or question answering off with
    /// --max-answer-tokens 0): NaN has no JSON form, and the readers of these reports take null as "not measured".
    /// </summary>
    private static JsonNode? Measured(double value) => double.IsNaN(value) ? null : value;

    /// <summary>Sequences per perplexity forward.</summary>
    private static int PrefillBatch(int wanted) => Math.Max(1, wanted);

    /// <summary>teacher (nothing replaced), mamba, window, window-mamba or mixed.</summary>
    public static string KindOf(TransformerConfig config)
    {
        var layers = config.Hybrid.Layers;
        var kinds = new[]
        {
            layers.Any(l => l.MambaGroups.Count > 0) ? "mamba" : null,
            layers.Any(l => l.WindowGroups.Count > 0) ? "window" : null,
            layers.Any(l => l.WindowMambaGroups.Count > 0) ? "window-mamba" : null,
        }.OfType<string>().ToArray();
        return kinds.Length switch { 0 => "teacher", 1 => kinds[0], _ => "mixed" };
    }

    private string Bucket((int Start, int End) bucket) => $"packed:{bucket.Start}-{bucket.End}";

    /// <summary>
    /// The key of the qa lines' answer tokens: every token after the prompt, given the question (the reference answer,
    /// then its end marker and the line's end, which both a model and its baseline predict almost surely).
    /// </summary>
    private const string QaAnswer = "qa_answer";

    /// <summary>
    /// Each line after one separator token; every token of the line (its end marker included) is predicted. A qa line's
    /// tokens after its <see cref="Prompt"/> are its answer's, and are counted once more on their own.
    /// </summary>
    private void LinePerplexity(IReadOnlyList<ValidationExample> examples, long[][] encoded, long separator, IReadOnlyDictionary<ValidationExample, long[]> prompts,
        NllAccumulator nll, Action<int> advance)
    {
        _lines.Clear();
        var order = Enumerable.Range(0, examples.Count).Where(i => encoded[i].Length > 0).ToArray();
        foreach (var chunk in order.Chunk(PrefillBatch(options.BatchSize)))
        {
            var sequences = chunk.Select(i => (long[])[separator, .. encoded[i]]).ToArray();
            var lineNll = TokenNll(sequences);
            for (var j = 0; j < chunk.Length; j++)
            {
                var example = examples[chunk[j]];
                var sum = lineNll[j].Sum();
                nll.Add(example.Kind, sum, lineNll[j].Length);
                nll.Add("all", sum, lineNll[j].Length);
                var answerStart = example.Kind == ValidationExample.Qa ? AnswerStart(encoded[chunk[j]], prompts[example]) : null;
                var answer = answerStart is { } start ? lineNll[j][start..] : [];
                var answerSum = answer.Sum();
                if (answer.Length > 0)
                {
                    nll.Add(QaAnswer, answerSum, answer.Length);
                }
                _lines.Add(new LineScore(example.Line, example.Kind, lineNll[j].Length, sum, answer.Length, answerSum));
            }
            advance(chunk.Length);
        }
    }

    /// <summary>
    /// Where the answer begins among a qa line's tokens: after its prompt's tokens, where the line's tokens start with
    /// them (null where the tokenizer merged across the prompt's end, so that no token boundary marks it).
    /// </summary>
    private static int? AnswerStart(long[] line, long[] prompt) =>
        prompt.Length < line.Length && line.AsSpan(0, prompt.Length).SequenceEqual(prompt) ? prompt.Length : null;

    /// <summary>The token stream of all lines in order, cut into sequences of the packed length (a shorter tail kept).</summary>
    private List<long[]> PackedSequences(long[][] encoded)
    {
        var stream = encoded.SelectMany(t => t).ToArray();
        var sequences = new List<long[]>();
        for (var start = 0; start + 1 < stream.Length; start += options.PackedLength)
        {
            sequences.Add(stream[start..Math.Min(stream.Length, start + options.PackedLength)]);
        }
        return sequences;
    }

    private void PackedPerplexity(List<long[]> packed, NllAccumulator nll, Action<int> advance)
    {
        foreach (var chunk in packed.Chunk(PrefillBatch(options.BatchSize / 4)))
        {
            var tokenNll = TokenNll(chunk);
            foreach (var values in tokenNll)
            {
                for (var i = 0; i < values.Length; i++)
                {
                    var position = i + 1; // the predicted token's position in its sequence
                    nll.Add("packed", values[i], 1);
                    foreach (var bucket in options.Buckets.Where(b => position >= b.Start && position < b.End))
                    {
                        nll.Add(Bucket(bucket), values[i], 1);
                    }
                }
            }
            advance(chunk.Length);
        }
    }

    /// <summary>Per sequence, the NLL of each token after the first given the tokens before it (one packed forward).</summary>
    private double[][] TokenNll(IReadOnlyList<long[]> sequences)
    {
        using var scope = NewDisposeScope();
        using var caches = model.CreateCache(sequences.Max(s => s.Length), sequences.Count);
        {
            var logits = model.Forward(new ForwardBatch(sequences, caches.Sequences) { AllLogits = true });
            var (rows, targets) = Data.NextTokenTargets.Of(sequences);
            var logProbabilities = nn.functional.log_softmax(logits.index_select(0, tensor(rows, device: logits.device)), 1);
            var picked = -logProbabilities.gather(1, tensor(targets, device: logits.device).unsqueeze(1)).squeeze(1);
            var values = picked.to(ScalarType.Float64).cpu().data<double>().ToArray();
            var result = new double[sequences.Count][];
            var start = 0;
            for (var s = 0; s < sequences.Count; s++)
            {
                var count = Math.Max(0, sequences[s].Length - 1);
                result[s] = values[start..(start + count)];
                start += count;
            }
            return result;
        }
    }

    /// <summary>Greedy answers to the qa lines (prompt = the conversation up to the assistant turn), scored against <c>answer</c>.</summary>
    private (double ExactMatch, double F1, List<JsonNode?> Samples) QuestionAnswering(IReadOnlyList<ValidationExample> qa, IReadOnlyDictionary<ValidationExample, long[]> prompts,
        Action<int> advance)
    {
        var samples = new List<JsonNode?>();
        _answers.Clear();
        if (qa.Count == 0 || options.MaxAnswerTokens == 0)
        {
            return (double.NaN, double.NaN, samples);
        }
        var stopIds = StopIds(model, tokenizer);
        double exact = 0, f1 = 0;
        foreach (var chunk in qa.Chunk(options.BatchSize))
        {
            var chunkPrompts = chunk.Select(e => prompts[e]).ToArray();
            var answers = GreedyDecoder.Decode(model, chunkPrompts, stopIds, options.MaxAnswerTokens);
            for (var i = 0; i < chunk.Length; i++)
            {
                var generated = tokenizer.Decode(answers[i].Select(t => (int)t).ToArray(), skipSpecialTokens: true).Trim();
                var reference = chunk[i].Answer!.Trim();
                var match = AnswerScore.ExactMatch(generated, reference);
                exact += match ? 1 : 0;
                f1 += AnswerScore.F1(generated, reference);
                _answers.Add(new GeneratedAnswer(chunk[i].Line, chunkPrompts[i], answers[i].ToArray(), match));
                if (samples.Count < options.Samples)
                {
                    samples.Add(new JsonObject { ["line"] = chunk[i].Line, ["question"] = chunk[i].Question, ["answer"] = reference, ["generated"] = generated, ["exact"] = match });
                }
            }
            advance(chunk.Length);
        }
        return (exact / qa.Count, f1 / qa.Count, samples);
    }

    /// <summary>The tokens that end an answer: the tokenizer's and the model's end-of-sequence tokens, and &lt;|endoftext|&gt;.</summary>
    public static HashSet<long> StopIds(ICausalLM model, CheckpointTokenizer tokenizer)
    {
        var stopIds = tokenizer.EosTokenIds.Concat(model.Config.EosTokenIds).Select(i => (long)i).ToHashSet();
        if (tokenizer.TryGetTokenId("<|endoftext|>", out var endOfText))
        {
            stopIds.Add(endOfText);
        }
        return stopIds;
    }

    /// <summary>The conversation's system and user turns, then the assistant header: the prompt the model was trained to answer.</summary>
    public static string Prompt(string conversation)
    {
        var index = conversation.IndexOf(AssistantPrompt, StringComparison.Ordinal);
        return index < 0 ? conversation + AssistantPrompt : conversation[..(index + AssistantPrompt.Length)];
    }

    /// <summary>The tokens of the conversation's <see cref="Prompt"/>, as the greedy decoder takes them.</summary>
    public static long[] PromptTokens(CheckpointTokenizer tokenizer, string conversation) =>
        tokenizer.Encode(Prompt(conversation), addBosToken: false).Select(t => (long)t).ToArray();
}

/// <summary>One greedy answer: the qa line it answers, its prompt's tokens, the answer's tokens (no stop token), and whether it matched exactly.</summary>
public sealed record GeneratedAnswer(int Line, long[] Prompt, long[] Tokens, bool Exact);

/// <summary>
/// One line's summed NLL (nats) over its <paramref name="Tokens"/> predicted tokens; for a qa line also over its
/// answer's tokens alone (0 tokens for a doc line).
/// </summary>
public sealed record LineScore(int Line, string Kind, int Tokens, double Nll, int AnswerTokens, double AnswerNll);
