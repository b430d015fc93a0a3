using System.Diagnostics;

namespace RecurFormer.Server.Tests;

/// <summary>
/// The official OpenAI JavaScript SDK (npm <c>openai</c>, with <c>zod</c>) against the shared server: the calls of the
/// issue that asked for tools, structured output and echo logprobs — <c>chat.completions.parse</c> with a zod schema,
/// tools with tool_choice required / named (parsed and streamed) / auto, <c>json_object</c>, completions with echo and
/// logprobs — in JsSdk/sdk.test.mjs under Node's test runner. The packages come from JsSdk/package-lock.json
/// (<c>.ci/run</c> installs them; a checkout without them gets them here with <c>npm ci</c>).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JavaScriptSdkTests(SharedServer shared)
{
    private static readonly string Folder = Path.Combine(TestServer.RepositoryRoot, "tests", "RecurFormer.Server.Tests", "JsSdk");

    [Fact]
    public async Task TheOfficialJavaScriptSdk_ParsesToolsStructuredOutputAndEchoLogprobs()
    {
        if (!Directory.Exists(Path.Combine(Folder, "node_modules", "openai")))
        {
            var (installed, log) = await Run("npm", ["ci", "--no-audit", "--no-fund"], new Dictionary<string, string>(), TimeSpan.FromMinutes(3));
            Assert.True(installed == 0, $"npm ci failed in {Folder}:\n{log}");
        }
        var environment = new Dictionary<string, string>
        {
            ["RECURFORMER_URL"] = new Uri(shared.Server.BaseAddress, "v1").ToString(),
            ["RECURFORMER_API_KEY"] = TestServer.ApiKey,
            ["RECURFORMER_MODEL"] = TestServer.ModelId,
        };
        var (exit, output) = await Run("node", ["--test", "--test-reporter=spec", "sdk.test.mjs"], environment, TimeSpan.FromMinutes(5));
        Assert.True(exit == 0, output);
        Assert.Contains("pass 8", output);
    }

    private static async Task<(int Exit, string Output)> Run(string program, string[] args, Dictionary<string, string> environment, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program) { WorkingDirectory = Folder, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
        }
        return (process.ExitCode, await stdout + await stderr);
    }
}
