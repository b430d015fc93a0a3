using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer distill` refusing what it cannot do, before it loads any weight.</summary>
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
}
