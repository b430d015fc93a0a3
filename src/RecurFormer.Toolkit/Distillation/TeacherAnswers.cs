using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Evaluation;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>How many conversations <see cref="TeacherAnswers"/> read, and what became of them.</summary>
public sealed record TeacherAnswerCounts(int Conversations, int SameAsBefore, int Rewritten, int Dropped, int OtherLines)
{
    /// <summary>Conversations in the output: those whose answer was the reference's already, and those rewritten.</summary>
    public int Written => SameAsBefore + Rewritten;
}

/// <summary>
/// Data for sequence-level distillation: the training file's ChatML conversations with their first assistant answer
/// replaced by the teacher's greedy answer to the same prompt. Stage 2's cross-entropy then trains the student
/// towards the tokens the teacher itself would pick, on the prefixes the teacher's own answers make, which is what
/// exact match against the teacher asks of it; on the reference text, the cross-entropy pulls away from the teacher
/// wherever the two differ (a quarter of the demo teacher's training answers). An answer that reaches the token limit
/// is dropped, so that no conversation teaches a cut-off answer; lines that are not conversations are not written
/// (interleave the files to mix them back). "Same as before" compares the texts character for character, which is
/// stricter than exact match's normalised words.
/// </summary>
public sealed class TeacherAnswers(ICausalLM teacher, CheckpointTokenizer tokenizer, int maxAnswerTokens, int batchSize)
{
    private const string EndOfTurn = "<|im_end|>";

    /// <summary>The training files' own escaping: ChatML's angle brackets and non-ASCII text as they are.</summary>
    private static readonly JsonSerializerOptions Readable = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes <c>{"text": conversation}</c> lines for the first <paramref name="limit"/> conversations of <paramref name="texts"/>.</summary>
    public TeacherAnswerCounts Write(IEnumerable<string> texts, TextWriter output, int? limit = null, IProgress<int>? progress = null)
    {
        var stopIds = Evaluator.StopIds(teacher, tokenizer);
        int conversations = 0, same = 0, rewritten = 0, dropped = 0, other = 0;
        var pending = new List<string>();

        void Flush()
        {
            var prompts = pending.Select(c => Evaluator.PromptTokens(tokenizer, c)).ToArray();
            var answers = GreedyDecoder.Decode(teacher, prompts, stopIds, maxAnswerTokens);
            for (var i = 0; i < pending.Count; i++)
            {
                if (answers[i].Count >= maxAnswerTokens)
                {
                    dropped++;
                    continue;
                }
                var answer = tokenizer.Decode(answers[i].Select(t => (int)t).ToArray(), skipSpecialTokens: true);
                var text = WithAnswer(pending[i], answer)!;
                if (text == pending[i])
                {
                    same++;
                }
                else
                {
                    rewritten++;
                }
                output.WriteLine(new JsonObject { ["text"] = text }.ToJsonString(Readable));
            }
            conversations += pending.Count;
            progress?.Report(conversations);
            pending.Clear();
        }

        foreach (var text in texts)
        {
            if (limit is { } most && conversations + pending.Count >= most)
            {
                break;
            }
            if (!IsConversation(text))
            {
                other++;
                continue;
            }
            pending.Add(text);
            if (pending.Count == batchSize)
            {
                Flush();
            }
        }
        if (pending.Count > 0)
        {
            Flush();
        }
        return new TeacherAnswerCounts(conversations, same, rewritten, dropped, other);
    }

    /// <summary>Whether the text has a complete assistant turn to answer.</summary>
    public static bool IsConversation(string text) => WithAnswer(text, "") is not null;

    /// <summary>
    /// The conversation with the content of its first assistant turn replaced by <paramref name="answer"/>, the rest
    /// (the end-of-turn token and what follows) kept; null where it has no complete assistant turn.
    /// </summary>
    public static string? WithAnswer(string conversation, string answer)
    {
        var header = conversation.IndexOf(Evaluator.AssistantPrompt, StringComparison.Ordinal);
        if (header < 0)
        {
            return null;
        }
        var start = header + Evaluator.AssistantPrompt.Length;
        var end = conversation.IndexOf(EndOfTurn, start, StringComparison.Ordinal);
        return end < 0 ? null : conversation[..start] + answer + conversation[end..];
    }
}
