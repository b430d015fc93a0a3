using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Evaluation;

namespace RecurFormer.Toolkit.Tests;

public sealed class DataTests
{
    private static string File(string name) => Path.Combine(AppContext.BaseDirectory, "Data", name);

    [Theory]
    [InlineData("mixed.jsonl")]
    [InlineData("mixed.jsonl.xz")]
    public void Malformed_lines_stop_the_read_with_their_line_number(string name)
    {
        var reader = new JsonlReader(File(name), MalformedLines.Stop);
        var error = Assert.Throws<DataFormatException>(() => reader.ReadTexts().ToList());
        Assert.Equal(4, error.Line);
        Assert.EndsWith($"{name}:4: no \"text\" string", error.Message);
    }

    [Theory]
    [InlineData("mixed.jsonl")]
    [InlineData("mixed.jsonl.xz")]
    public void Skipping_keeps_the_good_lines_and_reports_every_bad_one(string name)
    {
        var reader = new JsonlReader(File(name), MalformedLines.Skip);
        var lines = reader.ReadTexts().ToList();
        Assert.Equal([(1, "first line"), (2, "second"), (6, "last")], lines);
        Assert.Equal([4, 5], reader.Skipped.Select(s => s.Line));
        Assert.Contains("invalid JSON", reader.Skipped[1].Problem);
    }

    [Fact]
    public void Answers_are_scored_by_exact_match_and_token_f1()
    {
        Assert.True(AnswerScore.ExactMatch("Gets the value.", "gets the value"));
        Assert.False(AnswerScore.ExactMatch("Gets the value", "Gets a value"));
        Assert.Equal(2.0 / 3, AnswerScore.F1("Gets the value", "Gets a value"), 10);
        Assert.Equal(0, AnswerScore.F1("", "x"));
    }

    [Fact]
    public void The_qa_prompt_is_the_conversation_up_to_the_assistant_turn()
    {
        const string conversation = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|endoftext|>";
        Assert.Equal("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", Evaluator.Prompt(conversation));
    }
}
