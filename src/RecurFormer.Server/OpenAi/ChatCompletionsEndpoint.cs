using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using RecurFormer.Engine.Requests;
using RecurFormer.Server.Constraints;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Generation;
using RecurFormer.Server.Hosting;
using RecurFormer.Server.Streaming;
using RecurFormer.Server.Tools;

namespace RecurFormer.Server.OpenAi;

/// <summary>
/// <c>POST /v1/chat/completions</c>: render the messages (and tools) with the checkpoint's chat template, generate
/// (under a grammar when tools may be called or an output format is asked for), answer or stream; tool calls in the
/// output come back as <c>tool_calls</c>.
/// </summary>
public static class ChatCompletionsEndpoint
{
    public static async Task<IResult> Handle(ChatCompletionRequest request, HttpContext context, ModelHost host, GenerationService generation, IOptions<JsonOptions> json)
    {
        var model = GenerationExchange.RequireModel(host, generation);
        RequestMapping.CheckModel(request.Model, model);
        RequestMapping.CheckStreamOptions(request.Stream, request.StreamOptions);
        if (request.PromptLogprobs is not null && request.Stream == true)
        {
            throw ApiException.BadRequest("'prompt_logprobs' cannot be streamed; leave out 'stream' or 'prompt_logprobs'", "prompt_logprobs");
        }
        var tools = ToolRequest.FromRequest(request.Tools, request.ToolChoice, request.ParallelToolCalls);
        var format = OutputFormat.FromRequest(request);
        var prompt = RequestMapping.ChatPrompt(request, model, tools);
        var sampling = RequestMapping.ChatSampling(request, prompt.Count, model);
        var constraint = ConstraintFactory.For(model, sampling.MaxTokens, tools, format);
        var toolFormat = tools is { Choice: not ToolChoiceMode.None } ? model.ToolFormat : null;
        var shape = new ChatShape("chatcmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), model, sampling, toolFormat, prompt);
        return await GenerationExchange.RunAsync(context, generation, model, shape.Id, [prompt], sampling, constraint, request.Stream == true,
            request.StreamOptions?.IncludeUsage == true, json.Value.SerializerOptions, shape);
    }

    private sealed class ChatShape(string id, long created, LoadedModel model, SamplingParams sampling, ToolCallFormat? tools, IReadOnlyList<int> prompt) : IGenerationShape
    {
        private ToolCallStream[] _parsers = [];

        public string Id => id;

        private ChatCompletionChunk Chunk(IReadOnlyList<ChatChunkChoice> choices) => new(id, "chat.completion.chunk", created, model.Id, choices);

        private ChatCompletionChunk Delta(int index, ChatDelta delta, ChatLogprobs? logprobs = null) => Chunk([new ChatChunkChoice(index, delta, logprobs, null)]);

        public IResult Complete(ChoiceAccumulator results)
        {
            var choices = Enumerable.Range(0, results.Count).Select(i =>
            {
                var reason = FinishReasons.Name(results.Reason(i));
                var message = new AssistantMessage("assistant", results.Text(i));
                if (tools is not null)
                {
                    var (content, calls) = ToolCallStream.Parse(tools, results.TextWithMarkers(i));
                    if (calls.Count > 0)
                    {
                        message = new AssistantMessage("assistant", content)
                        {
                            ToolCalls = calls.Select(c => new ToolCall(c.Id, "function", new FunctionCall(c.Name, c.Arguments))).ToList(),
                        };
                        reason = reason == FinishReasons.Stop ? FinishReasons.ToolCalls : reason;
                    }
                }
                var logprobs = sampling.Logprobs ? new ChatLogprobs(results.Tokens(i).Where(t => t.Logprob is not null).Select(t => ChoiceAccumulator.ChatLogprob(model.Tokenizer, t.Logprob!)).ToList()) : null;
                return new ChatChoice(i, message, logprobs, reason);
            }).ToList();
            return TypedResults.Ok(new ChatCompletionResponse(id, "chat.completion", created, model.Id, choices, results.Usage())
            {
                PromptLogprobs = sampling.PromptLogprobs is not null && results.PromptLogprobs(0) is { } logprobs
                    ? ChoiceAccumulator.VllmPromptLogprobs(model.Tokenizer, prompt, logprobs)
                    : null,
            });
        }

        public async Task StartStreamAsync(SseWriter sse, int choices, CancellationToken cancellation)
        {
            if (tools is not null)
            {
                _parsers = Enumerable.Range(0, choices).Select(_ => new ToolCallStream(tools)).ToArray();
            }
            for (var choice = 0; choice < choices; choice++)
            {
                await sse.WriteAsync(Delta(choice, new ChatDelta { Role = "assistant", Content = "" }), cancellation);
            }
        }

        public async Task WriteEventAsync(SseWriter sse, int index, EngineEvent e, CancellationToken cancellation)
        {
            switch (e)
            {
                case TokenEvent token when tools is not null:
                    var logprobs = sampling.Logprobs && token.Logprob is not null ? new ChatLogprobs([ChoiceAccumulator.ChatLogprob(model.Tokenizer, token.Logprob)]) : null;
                    var items = _parsers[index].Feed(ChoiceAccumulator.MarkerText(model.ToolMarkerTokens, token) + token.Text);
                    if (items.Count == 0 && logprobs is not null)
                    {
                        await sse.WriteAsync(Delta(index, new ChatDelta { Content = "" }, logprobs), cancellation);
                    }
                    foreach (var item in items)
                    {
                        await WriteToolItemAsync(sse, index, item, logprobs, cancellation);
                        logprobs = null; // the token's logprobs go with the first piece it produced
                    }
                    break;
                case TokenEvent token when token.Text.Length > 0 || token.Logprob is not null && sampling.Logprobs:
                    var tokenLogprobs = sampling.Logprobs && token.Logprob is not null ? new ChatLogprobs([ChoiceAccumulator.ChatLogprob(model.Tokenizer, token.Logprob)]) : null;
                    await sse.WriteAsync(Delta(index, new ChatDelta { Content = token.Text }, tokenLogprobs), cancellation);
                    break;
                case FinishedEvent finished when finished.Reason != FinishReason.Abort:
                    var reason = FinishReasons.Name(finished.Reason);
                    if (tools is not null)
                    {
                        var parser = _parsers[index];
                        var rest = parser.Feed(finished.Text);
                        rest.AddRange(parser.Finish());
                        foreach (var item in rest)
                        {
                            await WriteToolItemAsync(sse, index, item, null, cancellation);
                        }
                        reason = parser.CallCount > 0 && reason == FinishReasons.Stop ? FinishReasons.ToolCalls : reason;
                    }
                    else if (finished.Text.Length > 0)
                    {
                        await sse.WriteAsync(Delta(index, new ChatDelta { Content = finished.Text }), cancellation);
                    }
                    await sse.WriteAsync(Chunk([new ChatChunkChoice(index, new ChatDelta(), null, reason)]), cancellation);
                    break;
            }
        }

        /// <summary>Text as a content delta; a call's start (id, type, name) and its argument pieces as tool_calls deltas, as OpenAI streams them.</summary>
        private Task WriteToolItemAsync(SseWriter sse, int index, ToolStreamItem item, ChatLogprobs? logprobs, CancellationToken cancellation) => item switch
        {
            ContentItem content => sse.WriteAsync(Delta(index, new ChatDelta { Content = content.Text }, logprobs), cancellation),
            CallStartItem start => sse.WriteAsync(Delta(index, new ChatDelta
            {
                ToolCalls = [new ToolCallDelta(start.Index) { Id = start.Id, Type = "function", Function = new FunctionCallDelta { Name = start.Name, Arguments = "" } }],
            }, logprobs), cancellation),
            CallArgumentsItem arguments => sse.WriteAsync(Delta(index, new ChatDelta
            {
                ToolCalls = [new ToolCallDelta(arguments.Index) { Function = new FunctionCallDelta { Arguments = arguments.Text } }],
            }, logprobs), cancellation),
            _ => Task.CompletedTask,
        };

        public object UsageChunk(UsageInfo usage) => Chunk([]) with { Usage = usage };
    }
}
