using System.Text;
using System.Text.Json;
using Json.Schema;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;
using ChatMessage = OpenAI.Chat.ChatMessage;
using ChatResponseFormat = OpenAI.Chat.ChatResponseFormat;

namespace RecurFormer.Server.Tests;

/// <summary>
/// Tool calling through the official OpenAI .NET client and Microsoft.Extensions.AI, against the demo model, which
/// knows nothing about tools: for <c>required</c> and a named function the grammar makes it call anyway, with
/// arguments that validate; under <c>auto</c> it answers in text exactly as without tools.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class ToolCallingTests(SharedServer shared)
{
    private const string WeatherSchema = """{"type":"object","properties":{"city":{"type":"string","maxLength":24},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city","unit"],"additionalProperties":false}""";
    private const string SearchSchema = """{"type":"object","properties":{"query":{"type":"string","maxLength":32},"limit":{"type":"integer","minimum":1,"maximum":10}},"required":["query"]}""";

    private readonly TestServer _server = shared.Server;

    private ChatClient Chat() => _server.OpenAi().GetChatClient(TestServer.ModelId);

    private static ChatMessage[] Question => [new UserChatMessage("What is the weather in Paris, in celsius?")];

    private static ChatCompletionOptions Options(ChatToolChoice choice, bool? parallel = null)
    {
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 120, ToolChoice = choice, AllowParallelToolCalls = parallel };
        options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "The current weather in a city", BinaryData.FromString(WeatherSchema)));
        options.Tools.Add(ChatTool.CreateFunctionTool("search", "Search the .NET docs", BinaryData.FromString(SearchSchema)));
        return options;
    }

    private static void AssertValid(string name, string arguments)
    {
        var schema = JsonSchema.FromText(name == "get_weather" ? WeatherSchema : SearchSchema);
        using var document = JsonDocument.Parse(arguments);
        Assert.True(schema.Evaluate(document.RootElement).IsValid, $"{name}({arguments}) does not validate");
    }

    [Fact]
    public async Task Required_GivesCallsThatValidate_AndFinishesWithToolCalls()
    {
        ChatCompletion completion = await Chat().CompleteChatAsync(Question, Options(ChatToolChoice.CreateRequiredChoice()));
        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        Assert.NotEmpty(completion.ToolCalls);
        foreach (var call in completion.ToolCalls)
        {
            Assert.StartsWith("call_", call.Id);
            Assert.Contains(call.FunctionName, new[] { "get_weather", "search" });
            AssertValid(call.FunctionName, call.FunctionArguments.ToString());
        }
    }

    [Fact]
    public async Task ANamedFunction_Streamed_ArrivesAsToolCallDeltas_ThatAssembleIntoOneValidCall()
    {
        var ids = new HashSet<string>();
        var names = new StringBuilder();
        var arguments = new StringBuilder();
        ChatFinishReason? finish = null;
        var deltas = 0;
        await foreach (var update in Chat().CompleteChatStreamingAsync(Question, Options(ChatToolChoice.CreateFunctionChoice("get_weather"))))
        {
            foreach (var call in update.ToolCallUpdates)
            {
                Assert.Equal(0, call.Index);
                if (call.ToolCallId is { } id)
                {
                    ids.Add(id);
                }
                names.Append(call.FunctionName);
                arguments.Append(call.FunctionArgumentsUpdate?.ToString());
                deltas++;
            }
            finish ??= update.FinishReason;
        }
        Assert.Single(ids);
        Assert.Equal("get_weather", names.ToString());
        Assert.True(deltas > 2, $"the arguments came in {deltas - 1} piece(s), not streamed");
        AssertValid("get_weather", arguments.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
    }

    [Fact]
    public async Task WithoutParallelToolCalls_RequiredGivesExactlyOneCall()
    {
        ChatCompletion completion = await Chat().CompleteChatAsync(Question, Options(ChatToolChoice.CreateRequiredChoice(), parallel: false));
        var call = Assert.Single(completion.ToolCalls);
        AssertValid(call.FunctionName, call.FunctionArguments.ToString());
    }

    [Fact]
    public async Task Auto_LeavesAModelThatDoesNotCall_AnsweringAsWithoutTools()
    {
        ChatMessage[] reference = [new SystemChatMessage(TestServer.SystemMessage), new UserChatMessage(TestServer.Question)];
        ChatCompletion completion = await Chat().CompleteChatAsync(reference, Options(ChatToolChoice.CreateAutoChoice()));
        Assert.Empty(completion.ToolCalls);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        // The demo template ignores tools, and the free-text grammar allows every token the model picks.
        Assert.Equal(TestServer.ReferenceAnswer, completion.Content[0].Text);
    }

    [Fact]
    public async Task MicrosoftExtensionsAI_FunctionInvocation_CallsTheFunction_SendsTheResultBack_AndAnswers()
    {
        var cities = new List<string>();
        var weather = AIFunctionFactory.Create((string city) =>
        {
            cities.Add(city);
            return new { temperature = 21, unit = "celsius", sky = "clear" }; // an object: the tool message content is JSON
        }, "get_weather", "The current weather in a city");
        IChatClient client = _server.OpenAi().GetChatClient(TestServer.ModelId).AsIChatClient().AsBuilder().UseFunctionInvocation().Build();
        var options = new ChatOptions { Tools = [weather], ToolMode = ChatToolMode.RequireSpecific("get_weather"), Temperature = 0, MaxOutputTokens = 100 };
        var response = await client.GetResponseAsync("What is the weather in Paris?", options);
        Assert.True(cities.Count == 1, string.Join(" | ", response.Messages.Select(m => m.Role + ": " + string.Join(", ", m.Contents.Select(c => c switch { FunctionCallContent f => $"call {f.Name}({JsonSerializer.Serialize(f.Arguments)}) {f.Exception?.Message}", FunctionResultContent r => $"result {r.Result}", _ => c.ToString() })))));
        Assert.Contains(response.Messages, m => m.Contents.OfType<FunctionCallContent>().Any(c => c.Name == "get_weather"));
        Assert.Contains(response.Messages, m => m.Contents.OfType<FunctionResultContent>().Any());
        Assert.False(string.IsNullOrWhiteSpace(response.Text), "no final answer after the tool result");
    }
}
