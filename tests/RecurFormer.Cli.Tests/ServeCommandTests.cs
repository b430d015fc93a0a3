using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using static RecurFormer.Cli.Tests.CliProcess;

namespace RecurFormer.Cli.Tests;

/// <summary>`recurformer serve MODEL` is the server, as `vllm serve MODEL` is vLLM's.</summary>
public sealed partial class ServeCommandTests
{
    [Fact]
    public async Task Serve_StartsTheServer_OnTheGivenModel_AndAnswersOverHttp()
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepositoryRoot };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "recurformer.dll"), "serve", "models/dotnet-docs-qwen2-16m", "--port", "0", "--served-model-name", "served-by-cli" })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            string? url = null;
            while (url is null && await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
            {
                if (ListeningOn().Match(line) is { Success: true } match)
                {
                    url = match.Groups["url"].Value;
                }
            }
            Assert.NotNull(url);
            using var http = new HttpClient { BaseAddress = new Uri(url) };
            for (var attempt = 0; attempt < 240 && (await http.GetAsync("health/ready", timeout.Token)).StatusCode != System.Net.HttpStatusCode.OK; attempt++)
            {
                await Task.Delay(250, timeout.Token);
            }
            var models = JsonDocument.Parse(await http.GetStringAsync("v1/models", timeout.Token)).RootElement;
            Assert.Equal("served-by-cli", models.GetProperty("data")[0].GetProperty("id").GetString());
        }
        finally
        {
            process.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task Serve_RefusesAnUnknownFlag_NamingIt()
    {
        var output = await Run("serve", "models/dotnet-docs-qwen2-16m", "--max-num-seq", "4");
        Assert.Equal(2, output.ExitCode);
        Assert.Contains("--max-num-seq", output.Stderr);
        Assert.DoesNotContain("   at ", output.Stderr);
    }

    [GeneratedRegex(@"Now listening on: (?<url>http://\S+)")]
    private static partial Regex ListeningOn();
}
