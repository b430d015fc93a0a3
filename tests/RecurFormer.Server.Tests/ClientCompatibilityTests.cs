using System.ClientModel;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;
using ChatMessage = OpenAI.Chat.ChatMessage;
using MeaiFinishReason = Microsoft.Extensions.AI.ChatFinishReason;

namespace RecurFormer.Server.Tests;

/// <summary>The official OpenAI .NET client and Microsoft.Extensions.AI talk to the server as they talk to OpenAI.</summary>
[Collection(ServerCollection.Name)]
public sealed class ClientCompatibilityTests(SharedServer shared)
{
    private readonly TestServer _server = shared.Server;

    private OpenAIClient Client() => _server.OpenAi();

    private static ChatMessage[] Reference => [new SystemChatMessage(TestServer.SystemMessage), new UserChatMessage(TestServer.Question)];

    [Fact]
    public async Task OpenAiClient_ChatAnswersTheReferenceQuestion_StreamedAndNotIdentically()
    {
        var chat = Client().GetChatClient(TestServer.ModelId);
        var options = new ChatCompletionOptions { Temperature = 0 };

        ChatCompletion completion = await chat.CompleteChatAsync(Reference, options);
        Assert.Equal(TestServer.ReferenceAnswer, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(TestServer.ModelId, completion.Model);
        Assert.True(completion.Usage.InputTokenCount > 0);
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);

        var streamed = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(Reference, options))
        {
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(TestServer.ReferenceAnswer, streamed.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.NotNull(usage); // the client asks for stream_options.include_usage
        Assert.Equal(completion.Usage.OutputTokenCount, usage.OutputTokenCount);
        Assert.Equal(completion.Usage.InputTokenCount, usage.InputTokenCount);
    }

    [Fact]
    public async Task OpenAiClient_MaxTokensEndsWithLength_AndLogprobsComeBack()
    {
        var chat = Client().GetChatClient(TestServer.ModelId);
        ChatCompletion completion = await chat.CompleteChatAsync(Reference,
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 4, IncludeLogProbabilities = true, TopLogProbabilityCount = 3 });
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(4, completion.Usage.OutputTokenCount);
        Assert.Equal(4, completion.ContentTokenLogProbabilities.Count);
        Assert.All(completion.ContentTokenLogProbabilities, t =>
        {
            Assert.True(t.LogProbability <= 0);
            Assert.Equal(3, t.TopLogProbabilities.Count);
        });
        Assert.StartsWith(string.Concat(completion.ContentTokenLogProbabilities.Select(t => t.Token)), TestServer.ReferenceAnswer);
    }

    [Fact]
    public async Task OpenAiClient_ListsAndRetrievesTheServedModel()
    {
        var models = Client().GetOpenAIModelClient();
        var list = await models.GetModelsAsync();
        Assert.Equal(TestServer.ModelId, Assert.Single(list.Value).Id);
        var model = await models.GetModelAsync(TestServer.ModelId);
        Assert.Equal(TestServer.ModelId, model.Value.Id);
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync("no-such-model"));
        Assert.Equal(404, missing.Status);
    }

    [Fact]
    public async Task OpenAiClient_SeesErrorsAsClientResultExceptions()
    {
        var chat = Client().GetChatClient("no-such-model");
        var error = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync(Reference));
        Assert.Equal(404, error.Status);
        Assert.Contains("no-such-model", error.Message);

        var unauthorized = new OpenAIClient(new ApiKeyCredential("wrong"), new OpenAIClientOptions { Endpoint = new Uri(_server.BaseAddress, "v1") });
        var denied = await Assert.ThrowsAsync<ClientResultException>(() => unauthorized.GetChatClient(TestServer.ModelId).CompleteChatAsync(Reference));
        Assert.Equal(401, denied.Status);
    }

    [Fact]
    public async Task Completions_AnswerInTheOpenAiShape()
    {
        // The OpenAI .NET client keeps its legacy completions client internal: this endpoint is checked over raw HTTP.
        var response = await _server.PostAsync("v1/completions", new { model = TestServer.ModelId, prompt = "System.Threading.CancellationToken", max_tokens = 8, temperature = 0 });
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = document.RootElement;
        Assert.Equal("text_completion", root.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", root.GetProperty("id").GetString());
        var choice = Assert.Single(root.GetProperty("choices").EnumerateArray());
        Assert.False(string.IsNullOrEmpty(choice.GetProperty("text").GetString()));
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(8, root.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task MicrosoftExtensionsAI_ChatClient_StreamsAndAnswers()
    {
        IChatClient client = Client().GetChatClient(TestServer.ModelId).AsIChatClient();
        List<Microsoft.Extensions.AI.ChatMessage> messages =
        [
            new(ChatRole.System, TestServer.SystemMessage),
            new(ChatRole.User, TestServer.Question),
        ];
        var options = new ChatOptions { Temperature = 0 };

        var response = await client.GetResponseAsync(messages, options);
        Assert.Equal(TestServer.ReferenceAnswer, response.Text);
        Assert.Equal(MeaiFinishReason.Stop, response.FinishReason);
        Assert.NotNull(response.Usage);

        var streamed = new StringBuilder();
        UsageDetails? usage = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, options))
        {
            streamed.Append(update.Text);
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        Assert.Equal(TestServer.ReferenceAnswer, streamed.ToString());
        Assert.NotNull(usage);
        Assert.Equal(response.Usage!.OutputTokenCount, usage.OutputTokenCount);
    }
}
