using System.Diagnostics;
using RecurFormer.Server.CommandLine;

namespace RecurFormer.Server.Tests;

/// <summary>
/// The server's command line as a vLLM user meets it: --help, an error naming an unknown option, the model as a
/// positional argument (with or without <c>serve</c>), vLLM's option names, and start-up mistakes as one line. The
/// process tests run the built server the way <c>dotnet run</c> does, from another working directory.
/// </summary>
public sealed class CommandLineTests
{
    [Fact]
    public void Help_ListsEveryOption_AndExitsZero()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        Assert.Equal(0, ServerCommandLine.HandleHelpOrErrors(ServerCommandLine.Parse(["--help"]), output, error));
        var help = output.ToString();
        Assert.All(ServerCommandLine.OptionNames, name => Assert.Contains(name, help));
        Assert.Contains("MODEL", help);
        Assert.Equal("", error.ToString());
    }

    [Theory]
    [InlineData("--gpu-memory-utilisation", "0.9")]
    [InlineData("--max_model_len", "512")]
    [InlineData("--trust-remote-code")]
    public void AnUnknownOption_IsAnErrorThatNamesIt(params string[] args)
    {
        var error = new StringWriter();
        Assert.Equal(2, ServerCommandLine.HandleHelpOrErrors(ServerCommandLine.Parse(args), new StringWriter(), error));
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal($"error: unknown option '{args[0]}'", lines[0]);
    }

    [Fact]
    public void AValueOfTheWrongType_IsAnErrorThatNamesTheOption()
    {
        var arguments = ServerCommandLine.Parse(["--port", "eighty"]);
        Assert.Contains(arguments.Errors, e => e.Contains("--port") && e.Contains("eighty"));
    }

    [Theory]
    [InlineData("models/x")]
    [InlineData("serve models/x")]
    [InlineData("serve --model models/x")]
    [InlineData("--model=models/x")]
    public void TheModel_IsPositional_OrAnOption_WithOrWithoutServe(string line)
    {
        var arguments = ServerCommandLine.Parse(line.Split(' '));
        Assert.Empty(arguments.Errors);
        Assert.Equal("models/x", arguments.Settings["RecurFormer:Model:Path"]);
    }

    [Fact]
    public void TwoDifferentModels_AreAnError()
    {
        Assert.Contains(ServerCommandLine.Parse(["models/a", "--model", "models/b"]).Errors, e => e.Contains("given twice"));
    }

    [Fact]
    public void VllmNames_SetTheirConfigurationKeys()
    {
        var arguments = ServerCommandLine.Parse(["serve", "m", "--served-model-name", "org/model", "alias-1", "alias-2", "--max-model-len", "1024",
            "--max-num-seqs", "8", "--gpu-memory-utilization", "0.85", "--chat-template", "t.jinja", "--tool-call-parser", "hermes",
            "--api-key", "k1", "--api-key", "k2", "--enable-auto-tool-choice", "--no-prefix-caching", "--RecurFormer:QueueTimeout=00:00:05"]);
        Assert.Empty(arguments.Errors);
        var settings = arguments.Settings;
        Assert.Equal("org/model", settings["RecurFormer:Model:ServedModelName"]);
        Assert.Equal("alias-1", settings["RecurFormer:Model:ServedModelAliases:0"]);
        Assert.Equal("alias-2", settings["RecurFormer:Model:ServedModelAliases:1"]);
        Assert.Equal("1024", settings["RecurFormer:Engine:MaxModelLen"]);
        Assert.Equal("8", settings["RecurFormer:Engine:MaxNumSeqs"]);
        Assert.Equal("0.85", settings["RecurFormer:Engine:GpuMemoryUtilization"]);
        Assert.Equal("t.jinja", settings["RecurFormer:Model:ChatTemplate"]);
        Assert.Equal("hermes", settings["RecurFormer:Model:ToolCallParser"]);
        Assert.Equal("k1", settings["RecurFormer:ApiKeys:0"]);
        Assert.Equal("k2", settings["RecurFormer:ApiKeys:1"]);
        Assert.Equal("00:00:05", settings["RecurFormer:QueueTimeout"]);
        Assert.Equal("false", settings["RecurFormer:Engine:EnablePrefixCaching"]);
        Assert.False(ServerCommandLine.Parse(["m"]).Settings.ContainsKey("RecurFormer:Engine:EnablePrefixCaching"));
    }

    [Fact]
    public async Task TheServerProcess_RefusesAnUnknownOption_InOneLine_WithExitCodeTwo()
    {
        var (exit, output) = await RunServer(TestServer.RepositoryRoot, ["--gpu-memory-utilisation", "0.9"], waitFor: null);
        Assert.Equal(2, exit);
        Assert.StartsWith("error: unknown option '--gpu-memory-utilisation'", output.Trim());
        Assert.DoesNotContain("   at ", output);
    }

    [Fact]
    public async Task AModelFolderThatDoesNotExist_IsOneLine_WithoutAStackTrace()
    {
        var (exit, output) = await RunServer(TestServer.RepositoryRoot, ["--model", "models/no-such-model", "--port", "0"], waitFor: null);
        Assert.Equal(1, exit);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: invalid configuration: RecurFormer:Model:Path: the folder 'models/no-such-model' does not exist", lines[0]);
    }

    [Fact]
    public async Task ARelativeModelPath_FromTheProjectFolder_IsFoundUpward_AndTheLogSaysWhere()
    {
        // `dotnet run --project src/RecurFormer.Server` runs the server in the project folder, not where the user typed
        // `--model models/...`: the path is then found in a folder above, and the log says which.
        var projectFolder = Path.Combine(TestServer.RepositoryRoot, "src", "RecurFormer.Server");
        var (_, output) = await RunServer(projectFolder, ["serve", "models/dotnet-docs-qwen2-16m", "--port", "0", "--threads", "1", "--cache-memory", "16MB"], waitFor: "Serving ");
        Assert.Contains($"using {TestServer.DemoTeacher}", output);
        Assert.Contains("Serving dotnet-docs-qwen2-16m", output);
    }

    /// <summary>Runs the built server; with <paramref name="waitFor"/>, stops it once that text was printed (or after a minute).</summary>
    private static async Task<(int? Exit, string Output)> RunServer(string workingDirectory, string[] args, string? waitFor)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "RecurFormer.Server.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Read(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (output)
            {
                output.AppendLine(line);
            }
            if (waitFor is not null && line.Contains(waitFor, StringComparison.Ordinal))
            {
                seen.TrySetResult();
            }
        }
        process.OutputDataReceived += (_, e) => Read(e.Data);
        process.ErrorDataReceived += (_, e) => Read(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        if (waitFor is null)
        {
            await process.WaitForExitAsync(timeout.Token);
            return (process.ExitCode, output.ToString());
        }
        await Task.WhenAny(seen.Task, process.WaitForExitAsync(timeout.Token));
        if (!process.HasExited)
        {
            process.Kill();
            await process.WaitForExitAsync(CancellationToken.None);
        }
        lock (output)
        {
            return (null, output.ToString());
        }
    }
}
