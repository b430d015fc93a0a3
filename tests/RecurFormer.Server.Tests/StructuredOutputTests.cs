using System.Text;
using System.Text.Json;
using Json.Schema;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;
using ChatMessage = OpenAI.Chat.ChatMessage;
using ChatResponseFormat = OpenAI.Chat.ChatResponseFormat;

namespace RecurFormer.Server.Tests;

/// <summary>
/// Structured output through the official OpenAI .NET client and Microsoft.Extensions.AI: the demo model writes
/// .NET documentation prose, yet under a schema it writes JSON that parses and validates (JsonSchema.Net).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class StructuredOutputTests(SharedServer shared)
{
    private const string ApiSchema = """{"type":"object","properties":{"name":{"type":"string","maxLength":40},"kind":{"type":"string","enum":["class","struct","method","property"]},"static":{"type":"boolean"},"overloads":{"type":"integer","minimum":0,"maximum":20},"related":{"type":"array","items":{"type":"string","maxLength":30},"maxItems":3}},"required":["name","kind","static","overloads","related"],"additionalProperties":false}""";

    private readonly TestServer _server = shared.Server;

    private OpenAIClient Client() => _server.OpenAi();

    private static ChatMessage[] Describe => [new SystemChatMessage(TestServer.SystemMessage), new UserChatMessage("Describe System.String.Trim as JSON.")];

    private static void AssertValidates(string schema, string json)
    {
        using var document = JsonDocument.Parse(json);
        var result = JsonSchema.FromText(schema).Evaluate(document.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.True(result.IsValid, $"{json} does not validate");
    }

    [Fact]
    public async Task JsonSchema_Strict_ValidatesAndParses_StreamedAndNot()
    {
        var chat = Client().GetChatClient(TestServer.ModelId);
        var options = new ChatCompletionOptions
        {
            Temperature = 0,
            MaxOutputTokenCount = 150,
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("api_member", BinaryData.FromString(ApiSchema), jsonSchemaIsStrict: true),
        };
        ChatCompletion completion = await chat.CompleteChatAsync(Describe, options);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        AssertValidates(ApiSchema, completion.Content[0].Text);

        var streamed = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync(Describe, options))
        {
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
        }
        Assert.Equal(completion.Content[0].Text, streamed.ToString());
    }

    [Fact]
    public async Task JsonObject_IsAJsonObject()
    {
        ChatCompletion completion = await Client().GetChatClient(TestServer.ModelId).CompleteChatAsync(Describe,
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 100, ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat() });
        using var document = JsonDocument.Parse(completion.Content[0].Text);
        Assert.Equal(JsonValueKind.Object, document.RootElement.ValueKind);
    }

    // long: the schema M.E.AI derives says only "integer", and the demo model's greedy answer is a 12-digit count.
    public sealed record ApiMember(string Name, bool IsStatic, long Overloads);

    [Fact]
    public async Task MicrosoftExtensionsAI_GetResponseOfT_Deserializes()
    {
        IChatClient client = Client().GetChatClient(TestServer.ModelId).AsIChatClient();
        var response = await client.GetResponseAsync<ApiMember>("Describe System.String.Trim.", new ChatOptions { Temperature = 0, MaxOutputTokens = 120 });
        Assert.True(response.TryGetResult(out var member), response.Text);
        Assert.NotNull(member!.Name);
    }

    [Fact]
    public async Task GuidedChoiceRegexAndJson_OnChatAndCompletions()
    {
        string[] choices = ["positive", "negative", "neutral"];
        var choice = await Content(await _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0, guided_choice = choices }));
        Assert.Contains(choice, choices);

        const string pattern = "[A-Z][a-z]{2,8}-[0-9]{3}";
        var regex = await Text(await _server.PostAsync("v1/completions", new { prompt = "System.Threading", temperature = 0, max_tokens = 20, guided_regex = pattern }));
        Assert.Matches($"^{pattern}$", regex);

        const string schema = """{"type":"object","properties":{"answer":{"type":"integer"}},"required":["answer"]}""";
        var json = await Text(await _server.PostAsync("v1/completions", new { prompt = "System.Int32", temperature = 0, max_tokens = 30, guided_json = JsonDocument.Parse(schema).RootElement }));
        AssertValidates(schema, json);
    }

    [Fact]
    public async Task ConstrainedAndFreeRequests_RunTogether_AndTheFreeOneIsUnchanged()
    {
        var free = _server.PostAsync("v1/chat/completions", new { messages = TestServer.ReferenceMessages, temperature = 0 });
        var constrained = _server.PostAsync("v1/chat/completions", new
        {
            messages = TestServer.ReferenceMessages,
            temperature = 0,
            max_tokens = 150,
            response_format = new { type = "json_schema", json_schema = new { name = "api", schema = JsonDocument.Parse(ApiSchema).RootElement } },
        });
        Assert.Equal(TestServer.ReferenceAnswer, await Content(await free));
        AssertValidates(ApiSchema, await Content(await constrained));
    }

    private static async Task<string> Content(HttpResponseMessage response)
    {
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(response.IsSuccessStatusCode, body.RootElement.ToString());
        return body.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
    }

    private static async Task<string> Text(HttpResponseMessage response)
    {
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(response.IsSuccessStatusCode, body.RootElement.ToString());
        return body.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }
}
