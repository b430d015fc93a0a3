using System.Net;
using System.Text.Json;

namespace RecurFormer.Server.Tests;

/// <summary>What probes, dashboards and clients written for vLLM expect: /health, model_name on the metrics, the new request fields in the OpenAPI document.</summary>
[Collection(ServerCollection.Name)]
public sealed class VllmCompatibilityTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    [Fact]
    public async Task Health_AnswersLikeReadiness_WithoutAnApiKey()
    {
        var response = await _server.Anonymous.GetAsync("health");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("healthy", body.RootElement.GetProperty("status").GetString());
        Assert.True(body.RootElement.GetProperty("checks").TryGetProperty("engine", out _));
    }

    [Fact]
    public async Task EveryRecurFormerSeries_CarriesModelName()
    {
        (await _server.PostAsync("v1/completions", new { prompt = "System.String", max_tokens = 2 })).EnsureSuccessStatusCode();
        var text = await _server.Anonymous.GetStringAsync("metrics");
        var series = text.Split('\n').Where(l => l.StartsWith("recurformer_", StringComparison.Ordinal)).ToList();
        Assert.Contains(series, l => l.StartsWith("recurformer_request_success_total{", StringComparison.Ordinal));
        Assert.Contains(series, l => l.StartsWith("recurformer_time_to_first_token_seconds_bucket{", StringComparison.Ordinal));
        Assert.All(series, l => Assert.Contains($"model_name=\"{TestServer.ModelId}\"", l));
    }

    [Fact]
    public async Task TheOpenApiDocument_DescribesToolsStructuredOutputAndPromptLogprobs()
    {
        using var document = JsonDocument.Parse(await _server.Anonymous.GetStringAsync("openapi/v1.json"));
        var schemas = document.RootElement.GetProperty("components").GetProperty("schemas");
        var chat = schemas.GetProperty("ChatCompletionRequest").GetProperty("properties");
        foreach (var field in new[] { "tools", "tool_choice", "parallel_tool_calls", "response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs", "prompt_logprobs", "chat_template_kwargs" })
        {
            Assert.True(chat.TryGetProperty(field, out _), $"ChatCompletionRequest.{field} is not documented");
        }
        var completion = schemas.GetProperty("CompletionRequest").GetProperty("properties");
        foreach (var field in new[] { "echo", "logprobs", "prompt_logprobs", "response_format", "guided_json" })
        {
            Assert.True(completion.TryGetProperty(field, out _), $"CompletionRequest.{field} is not documented");
        }
        var message = schemas.GetProperty("AssistantMessage").GetProperty("properties");
        Assert.True(message.TryGetProperty("tool_calls", out _));
        Assert.True(document.RootElement.GetProperty("paths").TryGetProperty("/health", out _));
    }
}

/// <summary>A server started the vLLM way: several served names and a chat template given on the command line.</summary>
public sealed class ServedNamesAndTemplateTests
{
    // ChatML as the demo model knows it, with a variable only chat_template_kwargs can set.
    private const string Template = "{% if preamble %}<|im_start|>system\nAnswer in one sentence. Be precise.<|im_end|>\n{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    [Fact]
    public async Task Aliases_AreServed_AndChatTemplateKwargs_ReachTheCommandLineTemplate()
    {
        var templateFile = Path.Combine(Path.GetTempPath(), $"recurformer-template-{Guid.NewGuid():N}.jinja");
        await File.WriteAllTextAsync(templateFile, Template);
        try
        {
            await using var server = await TestServer.StartAsync(new Dictionary<string, string>
            {
                ["served-model-name"] = "org/demo",
                ["RecurFormer:Model:ServedModelAliases:0"] = "demo-alias",
                ["chat-template"] = templateFile,
            });
            using var models = JsonDocument.Parse(await server.Http.GetStringAsync("v1/models"));
            Assert.Equal(["org/demo", "demo-alias"], models.RootElement.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));

            async Task<JsonElement> Ask(string model, object? kwargs)
            {
                var response = await server.PostAsync("v1/chat/completions", new { model, messages = new[] { new { role = "user", content = TestServer.Question } }, max_tokens = 1, chat_template_kwargs = kwargs });
                using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                Assert.True(response.IsSuccessStatusCode, body.RootElement.ToString());
                return body.RootElement.Clone();
            }
            var plain = await Ask("demo-alias", null);
            Assert.Equal("org/demo", plain.GetProperty("model").GetString());
            var withPreamble = await Ask("org/demo", new { preamble = true });
            Assert.True(withPreamble.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() > plain.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            await ErrorAssert.IsOpenAiError(await server.PostAsync("v1/chat/completions", new { model = "dotnet-docs-qwen2-16m", messages = TestServer.ReferenceMessages }), 404, "model_not_found");
        }
        finally
        {
            File.Delete(templateFile);
        }
    }
}
