using System.Text.Json.Nodes;
using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer distill` refusing what it cannot do, before it loads any weight; `distill answers` end to end.</summary>
public sealed class DistillCommandTests
{
    private static string Models(string name) => Path.Combine(RepositoryRoot, "models", name);

    [Fact]
    public async Task A_window_mamba_student_is_refused_stage_1_and_a_bad_time_limit_or_worker_count_is_refused()
    {
        var data = Path.Combine(RepositoryRoot, "tests", "RecurFormer.Toolkit.Tests", "Data");
        var output = Path.Combine(Path.GetTempPath(), $"recurformer-distill-{Guid.NewGuid():N}");
        try
        {
            string[] common = ["distill", "--teacher", Models("dotnet-docs-qwen2-16m"), "--student", Models("dotnet-docs-recurformer-16m"),
                "--data", Directory.GetFiles(data, "*.jsonl")[0], "--out", output];
            var stage1 = await Run([.. common, "--stage1-steps", "5", "--stage2-steps", "0"]);
            Assert.Equal(1, stage1.ExitCode);
            Assert.Contains("a window-mamba student trains end to end only: give --stage1-steps 0", stage1.Stderr);
            Assert.DoesNotContain("   at ", stage1.Stderr);

            var time = await Run([.. common, "--stage1-steps", "0", "--stage2-steps", "1", "--stop-after-seconds", "-3"]);
            Assert.Equal(1, time.ExitCode);
            Assert.Contains("--stop-after-seconds must be a positive number of seconds, not -3", time.Stderr);

            var workers = await Run([.. common, "--stage1-steps", "0", "--stage2-steps", "1", "--batch", "2", "--workers", "3"]);
            Assert.Equal(1, workers.ExitCode);
            Assert.Contains("--workers must be between 1 and --batch (2), and 1 off the CPU; not 3", workers.Stderr);
            Assert.False(Directory.Exists(output)); // refused before it made anything
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    [Fact]
    public async Task A_resume_with_other_options_than_the_checkpoints_is_refused_and_one_with_the_same_finishes_the_run()
    {
        var folder = Directory.CreateTempSubdirectory("recurformer-resume-").FullName;
        try
        {
            var data = EvalCommandTests.Lines(folder, 4, 4);
            var output = Path.Combine(folder, "run");
            string[] run = ["distill", "--teacher", Models("dotnet-docs-qwen2-16m"), "--student", Models("dotnet-docs-recurformer-16m"),
                "--data", data, "--out", output, "--stage1-steps", "0", "--stage2-steps", "2",
                "--batch", "1", "--length", "16", "--stage2-length", "16"];
            var first = await Run([.. run, "--stop-after", "1", "--threads", "1"]);
            Assert.True(first.ExitCode == 0, first.Stderr);
            Assert.False(File.Exists(Path.Combine(output, "model.safetensors"))); // stopped: only the checkpoint

            // The flags of the run forgotten on resuming (the defaults: 200 + 200 steps, batch 4, ...): refused, and
            // nothing written over the checkpoint or beside it.
            var forgotten = await Run("distill", "--teacher", Models("dotnet-docs-qwen2-16m"), "--student", Models("dotnet-docs-recurformer-16m"),
                "--data", data, "--out", output, "--resume", "--threads", "1");
            Assert.Equal(1, forgotten.ExitCode);
            Assert.Contains("is a run with other options (", forgotten.Stderr);
            Assert.Contains("--batch 1 in the checkpoint, 4 now", forgotten.Stderr);
            Assert.Contains("--stage2-steps 2 in the checkpoint, 200 now", forgotten.Stderr);
            Assert.Contains($"--student {Path.Combine(output, "checkpoint")}", forgotten.Stderr);
            Assert.DoesNotContain("   at ", forgotten.Stderr);
            Assert.False(File.Exists(Path.Combine(output, "model.safetensors")));
            Assert.Equal(1, JsonNode.Parse(File.ReadAllText(Path.Combine(output, "checkpoint", "state.json")))!["step"]!.GetValue<int>());

            // What may change on resuming (threads, checkpoint interval) does not stop it.
            var resumed = await Run([.. run, "--resume", "--checkpoint-every", "7", "--threads", "2"]);
            Assert.True(resumed.ExitCode == 0, resumed.Stderr);
            Assert.Equal(2, JsonNode.Parse(resumed.Stdout)!["stage2_last"]!["step"]!.GetValue<int>());
            Assert.True(File.Exists(Path.Combine(output, "model.safetensors")));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task Distill_answers_writes_the_teachers_answers_keeps_an_existing_file_without_force_and_stops_at_a_bad_line()
    {
        var folder = Directory.CreateTempSubdirectory("recurformer-answers-").FullName;
        try
        {
            var data = EvalCommandTests.Lines(folder, 1, 3);
            var output = Path.Combine(folder, "answers.jsonl");
            var result = await Run("distill", "answers", "--teacher", Models("dotnet-docs-qwen2-16m"), "--data", data, "--out", output, "--batch", "2");
            Assert.True(result.ExitCode == 0, result.Stderr);
            var counts = JsonNode.Parse(result.Stdout)!;
            Assert.Equal(3, counts["conversations"]!.GetValue<int>());
            Assert.Equal(0, counts["dropped_at_the_token_limit"]!.GetValue<int>());   // the teacher's answers stop well within 96 tokens
            Assert.Equal(1, counts["other_lines_left_out"]!.GetValue<int>());
            var written = File.ReadAllLines(output);
            Assert.Equal(3, written.Length);
            Assert.Equal(3, counts["written"]!.GetValue<int>());
            Assert.All(written, line => Assert.StartsWith("<|im_start|>", JsonNode.Parse(line)!["text"]!.GetValue<string>()));
            Assert.False(File.Exists(output + ".partial"));

            var again = await Run("distill", "answers", "--teacher", Models("dotnet-docs-qwen2-16m"), "--data", data, "--out", output);
            Assert.Equal(1, again.ExitCode);
            Assert.Contains("exists; give --force to overwrite it", again.Stderr);
            Assert.DoesNotContain("   at ", again.Stderr);
            Assert.Equal(written, File.ReadAllLines(output));

            // A malformed line stops the run with the line's number, and leaves neither the output nor a part of it.
            File.AppendAllLines(data, ["not json"]);
            var bad = Path.Combine(folder, "bad.jsonl");
            var stopped = await Run("distill", "answers", "--teacher", Models("dotnet-docs-qwen2-16m"), "--data", data, "--out", bad);
            Assert.Equal(1, stopped.ExitCode);
            Assert.Contains($"{data}:5:", stopped.Stderr);
            Assert.DoesNotContain("   at ", stopped.Stderr);
            Assert.False(File.Exists(bad) || File.Exists(bad + ".partial"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
