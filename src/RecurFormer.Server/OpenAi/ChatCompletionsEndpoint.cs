using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;

namespace RecurFormer.Server.OpenAi;

/// <summary><c>POST /v1/chat/completions</c>: render the messages with the checkpoint's chat template, generate, answer or stream.</summary>
public static class ChatCompletionsEndpoint
{
    public static async Task<IResult> Handle(ChatCompletionRequest request, HttpContext context, ModelHost host, GenerationService generation, IOptions<JsonOptions> json)
    {
        var model = GenerationExchange.RequireModel(host, generation);
        RequestMapping.CheckModel(request.Model, model);
        RequestMapping.CheckStreamOptions(request.Stream, request.StreamOptions);
        RequestMapping.CheckUnsupported(request);
        var prompt = RequestMapping.ChatPrompt(request, model);
        var sampling = RequestMapping.ChatSampling(request, prompt.Count, model);
        var shape = new ChatShape("chatcmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), model, sampling);
        return await GenerationExchange.RunAsync(context, generation, model, shape.Id, [prompt], sampling, request.Stream == true,
            request.StreamOptions?.IncludeUsage == true, json.Value.SerializerOptions, shape);
    }

    private sealed class ChatShape(string id, long created, LoadedModel model, SamplingParams sampling) : IGenerationShape
    {
        public string Id => id;

        private ChatCompletionChunk Chunk(IReadOnlyList<ChatChunkChoice> choices) => new(id, "chat.completion.chunk", created, model.Id, choices);

        public IResult Complete(ChoiceAccumulator results)
        {
            var choices = Enumerable.Range(0, results.Count).Select(i => new ChatChoice(i,
                new AssistantMessage("assistant", results.Text(i)),
                sampling.Logprobs ? new ChatLogprobs(results.Tokens(i).Where(t => t.Logprob is not null).Select(t => ChoiceAccumulator.ChatLogprob(model.Tokenizer, t.Logprob!)).ToList()) : null,
                ChoiceAccumulator.FinishReasonName(results.Reason(i)))).ToList();
            return TypedResults.Ok(new ChatCompletionResponse(id, "chat.completion", created, model.Id, choices, results.Usage()));
        }

        public async Task StartStreamAsync(SseWriter sse, int choices, CancellationToken cancellation)
        {
            for (var choice = 0; choice < choices; choice++)
            {
                await sse.WriteAsync(Chunk([new ChatChunkChoice(choice, new ChatDelta { Role = "assistant", Content = "" }, null, null)]), cancellation);
            }
        }

        public async Task WriteEventAsync(SseWriter sse, int index, EngineEvent e, CancellationToken cancellation)
        {
            switch (e)
            {
                case TokenEvent token when token.Text.Length > 0 || token.Logprob is not null && sampling.Logprobs:
                    var logprobs = sampling.Logprobs && token.Logprob is not null ? new ChatLogprobs([ChoiceAccumulator.ChatLogprob(model.Tokenizer, token.Logprob)]) : null;
                    await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta { Content = token.Text }, logprobs, null)]), cancellation);
                    break;
                case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                    if (finished.Text.Length > 0)
                    {
                        await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta { Content = finished.Text }, null, null)]), cancellation);
                    }
                    await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta(), null, ChoiceAccumulator.FinishReasonName(finished.Reason))]), cancellation);
                    break;
            }
        }

        public object UsageChunk(UsageInfo usage) => Chunk([]) with { Usage = usage };
    }
}
