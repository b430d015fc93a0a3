using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer generate` as a user runs it.</summary>
public sealed class GenerateCommandTests
{
    private const string ChatPrompt =
        "<|im_start|>system\nYou are a concise assistant that explains .NET APIs.<|im_end|>\n<|im_start|>user\nExplain System.Threading.CancellationToken.Equals.<|im_end|>\n<|im_start|>assistant\n";

    [Fact]
    public async Task The_demo_teacher_answers_the_reference_question_up_to_im_end()
    {
        var output = await Run("generate", "--max-tokens", "100", ChatPrompt);
        Assert.Equal(0, output.ExitCode);
        Assert.Equal("Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object. It returns true if the specified object is equal to the current instance; otherwise, false.\n", output.Stdout);
    }

    [Fact]
    public async Task Messages_are_rendered_with_the_checkpoint_chat_template()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, """
                [{"role": "system", "content": "You are a concise assistant that explains .NET APIs."},
                 {"role": "user", "content": "Explain System.Threading.CancellationToken.Equals."}]
                """);
            var output = await Run("generate", "--messages", file, "--max-tokens", "100");
            Assert.Equal(0, output.ExitCode);
            Assert.StartsWith("Determines whether the current System.Threading.CancellationToken instance is equal", output.Stdout);

            File.WriteAllText(file, """[{"content": "no role"}]""");
            var bad = await Run("generate", "--messages", file);
            Assert.Equal(1, bad.ExitCode);
            Assert.Contains("has no 'role'", bad.Stderr);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Prompt_ids_and_output_ids_work_for_a_model_without_tokenizer()
    {
        // llama-tiny prompt 0 and its 24 reference greedy tokens (tests/fixtures/llama-tiny/reference.safetensors).
        var reference = Path.Combine(RepositoryRoot, "tests", "fixtures", "llama-tiny", "reference.safetensors");
        var (prompt, greedy) = ReadReference(reference);
        var output = await Run("generate", "--model", "tests/fixtures/llama-tiny", "--prompt-ids", string.Join(",", prompt), "--max-tokens", "24", "--ignore-eos", "--output-ids");
        Assert.Equal(0, output.ExitCode);
        Assert.Equal(string.Join(",", greedy), output.Stdout.TrimEnd('\n').Split('\n')[^1]);
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible()
    {
        string[] args = ["generate", "--temperature", "1.0", "--seed", "42", "--max-tokens", "20", "--output-ids", ChatPrompt];
        var first = await Run(args);
        var second = await Run(args);
        Assert.Equal(0, first.ExitCode);
        Assert.Equal(first.Stdout, second.Stdout);
    }

    [Theory]
    [InlineData("not a checkpoint folder (no config.json)", "generate", "--model", "docs", "hello")]
    [InlineData("token id 320 is outside the vocabulary", "generate", "--model", "tests/fixtures/qwen2-tiny", "--prompt-ids", "1,2,320")]
    [InlineData("'x' is not a token id", "generate", "--model", "tests/fixtures/qwen2-tiny", "--prompt-ids", "1,x")]
    [InlineData("has no tokenizer files", "generate", "--model", "tests/fixtures/qwen2-tiny", "hello")]
    [InlineData("--max-tokens must be at least 1", "generate", "--max-tokens", "0", "hello")]
    [InlineData("unknown device 'tpu'", "generate", "--device", "tpu", "hello")]
    public async Task Bad_input_is_one_line_and_a_non_zero_exit_code(string expected, params string[] args)
    {
        var output = await Run(args);
        Assert.NotEqual(0, output.ExitCode);
        Assert.Contains(expected, output.Stderr);
        Assert.Single(output.Stderr.TrimEnd('\n').Split('\n'));
        Assert.DoesNotContain("   at ", output.Stderr);
    }

    [Fact]
    public async Task Verbose_adds_the_stack_trace()
    {
        var output = await Run("generate", "--model", "docs", "--verbose", "hello");
        Assert.NotEqual(0, output.ExitCode);
        Assert.Contains("   at ", output.Stderr);
    }

    /// <summary>prompt_0 and greedy_0 (int64) of a reference file, read with the format's own layout.</summary>
    private static (long[] Prompt, long[] Greedy) ReadReference(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var headerLength = (int)BitConverter.ToUInt64(bytes, 0);
        using var header = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        long[] Read(string name)
        {
            var offsets = header.RootElement.GetProperty(name).GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt32()).ToArray();
            return Enumerable.Range(0, (offsets[1] - offsets[0]) / 8).Select(i => BitConverter.ToInt64(bytes, 8 + headerLength + offsets[0] + i * 8)).ToArray();
        }
        return (Read("prompt_0"), Read("greedy_0"));
    }
}
