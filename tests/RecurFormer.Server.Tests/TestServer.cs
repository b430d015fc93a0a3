using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RecurFormer.Engine;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.Tests;

/// <summary>
/// The real server (Kestrel on a free loopback port, the real middleware and engine) serving the demo teacher.
/// Tests talk to it over HTTP only; they read the engine's stats directly only to check that memory was freed.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    public const string ApiKey = "sk-test-0123456789";
    public const string SystemMessage = "You are a concise assistant that explains .NET APIs.";
    public const string Question = "Explain System.Threading.CancellationToken.Equals.";
    public const string ReferenceAnswer = "Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object. It returns true if the specified object is equal to the current instance; otherwise, false.";
    public const string ModelId = "dotnet-docs-qwen2-16m";

    private TestServer(WebApplication app)
    {
        App = app;
        BaseAddress = new Uri(app.Urls.First().TrimEnd('/') + "/");
        Http = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromMinutes(3) };
        Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiKey);
        // A refused body (413) is answered before it is sent only if the client waits for 100-continue long enough.
        Anonymous = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromMinutes(1) }) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromMinutes(3) };
    }

    public WebApplication App { get; }
    public Uri BaseAddress { get; }

    /// <summary>Sends the API key.</summary>
    public HttpClient Http { get; }

    /// <summary>Sends no API key.</summary>
    public HttpClient Anonymous { get; }

    public ModelHost Host => App.Services.GetRequiredService<ModelHost>();

    /// <summary>The official OpenAI .NET client, pointed at this server with the API key.</summary>
    public OpenAI.OpenAIClient OpenAi() => new(new System.ClientModel.ApiKeyCredential(ApiKey), new OpenAI.OpenAIClientOptions { Endpoint = new Uri(BaseAddress, "v1") });
    public LLMEngine Engine => Host.Model!.Engine;

    public static string RepositoryRoot { get; } = FindRoot();
    public static string DemoTeacher => Path.Combine(RepositoryRoot, "models", ModelId);

    /// <summary>
    /// Starts a server; <paramref name="settings"/> are command-line options or configuration keys (without the
    /// leading dashes) added to or replacing the defaults; waits for the model unless a gate holds it;
    /// <paramref name="configure"/> may add to the builder (a log capture, …).
    /// </summary>
    public static async Task<TestServer> StartAsync(IDictionary<string, string>? settings = null, Task? loadGate = null, Action<WebApplicationBuilder>? configure = null)
    {
        var options = new Dictionary<string, string>
        {
            ["urls"] = "http://127.0.0.1:0",
            ["model"] = DemoTeacher,
            ["api-key"] = ApiKey,
            ["RecurFormer:Engine:CacheMemory"] = "64MB",
            ["RecurFormer:MaxRequestBodySize"] = "4MB",
            ["RecurFormer:Model:Threads"] = "2",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
        {
            options[key] = value;
        }
        var args = options.Select(kv => $"--{kv.Key}={kv.Value}").ToList();
        var app = ServerApplication.Build([.. args], builder =>
        {
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            if (loadGate is not null)
            {
                builder.Services.AddSingleton(new ModelLoadGate(loadGate));
            }
            configure?.Invoke(builder);
        });
        await app.StartAsync();
        var server = new TestServer(app);
        if (loadGate is null)
        {
            Assert.True(await server.Host.Loaded, "the model did not load");
        }
        return server;
    }

    public static object ReferenceMessages => new object[]
    {
        new { role = "system", content = SystemMessage },
        new { role = "user", content = Question },
    };

    public static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    public async Task<HttpResponseMessage> PostAsync(string path, object body, CancellationToken cancellation = default) =>
        await Http.PostAsync(path, Json(body), cancellation);

    /// <summary>Waits until the engine has published an idle snapshot with no sequence holding memory.</summary>
    public async Task<EngineStats> WaitIdleAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (true)
        {
            var stats = Engine.Stats;
            if (stats.Running == 0 && stats.Waiting == 0 && stats.Cache.Sequences == 0)
            {
                return stats;
            }
            await Task.Delay(20, timeout.Token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        Anonymous.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RecurFormer.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("RecurFormer.sln not found");
    }
}

/// <summary>One server for every test in the collection (loading the model is the slow part).</summary>
public sealed class SharedServer : IAsyncLifetime
{
    public TestServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await TestServer.StartAsync();

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class ServerCollection : ICollectionFixture<SharedServer>
{
    public const string Name = "server";
}

/// <summary>Checks an error response: the status, and the OpenAI error JSON with every member present.</summary>
public static class ErrorAssert
{
    public static async Task<JsonElement> IsOpenAiError(HttpResponseMessage response, int status, string? code = null, string? param = null)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"expected {status}, got {(int)response.StatusCode}: {body}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var document = JsonDocument.Parse(body);
        var error = document.RootElement.GetProperty("error");
        Assert.Equal(JsonValueKind.String, error.GetProperty("message").ValueKind);
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(JsonValueKind.String, error.GetProperty("type").ValueKind);
        Assert.True(error.TryGetProperty("param", out var actualParam), "no 'param'");
        Assert.True(error.TryGetProperty("code", out var actualCode), "no 'code'");
        Assert.DoesNotContain("   at ", body); // no stack trace
        if (code is not null)
        {
            Assert.Equal(code, actualCode.GetString());
        }
        if (param is not null)
        {
            Assert.Equal(param, actualParam.GetString());
        }
        return error.Clone();
    }
}
