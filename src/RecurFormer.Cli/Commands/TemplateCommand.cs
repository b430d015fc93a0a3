using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Templates;
using RecurFormer.Templates.ChatTemplates;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer template (--model DIR | --template FILE) --context FILE.json</c>: renders a chat template with the
/// members of a JSON object as its variables and writes the result to stdout byte for byte (UTF-8, nothing added).
/// With --model, special tokens the context does not set come from the checkpoint. Exit codes: 2 for a template error
/// (one line with the template's line and column), 3 when the template calls raise_exception (its message).
/// --bench N renders N times after one parse and prints the mean time per render instead of the text.
/// </summary>
public static class TemplateCommand
{
    public const int TemplateErrorExitCode = 2;
    public const int RaisedExitCode = 3;

    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Checkpoint folder whose chat template (and special tokens) to use." };
        var template = new Option<string?>("--template", "-t") { Description = "A Jinja2 chat template file to use instead of a checkpoint's." };
        var context = new Option<string?>("--context", "-c") { Description = "JSON object whose members are the template's variables (messages, tools, add_generation_prompt, ...)." };
        var bench = new Option<int?>("--bench") { Description = "Micro-benchmark: render this many times after parsing and print the mean time per render. Without --context, uses a built-in 20-message conversation with tools." };

        var command = new Command("template", "Render a chat template exactly as transformers' apply_chat_template does.") { model, template, context, bench };
        command.SetAction(parse =>
        {
            var modelFolder = parse.GetValue(model);
            var templateFile = parse.GetValue(template);
            if ((modelFolder is null) == (templateFile is null))
            {
                throw new UserError("give exactly one of --model DIR or --template FILE");
            }
            var iterations = parse.GetValue(bench);
            var contextFile = parse.GetValue(context);
            if (contextFile is null && iterations is null)
            {
                throw new UserError("--context FILE.json is required");
            }
            var variables = contextFile is null ? BenchVariables() : ReadContext(contextFile);
            var source = modelFolder ?? templateFile!;
            try
            {
                var stopwatch = Stopwatch.StartNew();
                var chatTemplate = modelFolder is not null
                    ? ChatTemplateLoader.Load(modelFolder)
                    : new ChatTemplate(new Dictionary<string, Template> { ["default"] = Template.Parse(ReadTemplate(templateFile!)) }, new Dictionary<string, object?>());
                var parseTime = stopwatch.Elapsed;
                if (iterations is { } count)
                {
                    return Bench(chatTemplate, variables, count, parseTime);
                }
                var text = chatTemplate.RenderVariables(variables);
                using var stdout = Console.OpenStandardOutput();
                stdout.Write(new UTF8Encoding(false).GetBytes(text));
                stdout.Flush();
                return 0;
            }
            catch (TemplateRaisedException raised)
            {
                throw new UserError(raised.Reason, RaisedExitCode);
            }
            catch (TemplateException error)
            {
                throw new UserError($"{source}: {OneLine(error.Message)}", TemplateErrorExitCode);
            }
            catch (ChatTemplateNotFoundException missing)
            {
                throw new UserError(missing.Message);
            }
            catch (ChatInputException input)
            {
                throw new UserError($"{contextFile}: {input.Message}");
            }
        });
        return command;
    }

    private static string OneLine(string text) => text.Replace("\r", "\\r", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string ReadTemplate(string path)
    {
        if (!File.Exists(path))
        {
            throw new UserError($"template file not found: {path}");
        }
        return File.ReadAllText(path, Encoding.UTF8);
    }

    private static Dictionary<string, object?> ReadContext(string path)
    {
        if (!File.Exists(path))
        {
            throw new UserError($"context file not found: {path}");
        }
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path, Encoding.UTF8));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new UserError($"{path}: the context must be a JSON object whose members are the template's variables");
            }
            return document.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone(), StringComparer.Ordinal);
        }
        catch (JsonException error)
        {
            throw new UserError($"{path}: not valid JSON: {error.Message}");
        }
    }

    private static int Bench(ChatTemplate chatTemplate, Dictionary<string, object?> variables, int iterations, TimeSpan parseTime)
    {
        if (iterations < 1)
        {
            throw new UserError($"--bench needs at least 1 iteration, not {iterations}");
        }
        // Warm up (JIT) before timing.
        var text = chatTemplate.RenderVariables(variables);
        for (var i = 0; i < Math.Min(iterations, 200); i++)
        {
            chatTemplate.RenderVariables(variables);
        }
        var stopwatch = Stopwatch.StartNew();
        for (var i = 0; i < iterations; i++)
        {
            chatTemplate.RenderVariables(variables);
        }
        stopwatch.Stop();
        var mean = stopwatch.Elapsed.TotalMicroseconds / iterations;
        var messageCount = variables.TryGetValue("messages", out var m) && m is JsonElement { ValueKind: JsonValueKind.Array } array ? array.GetArrayLength() : 0;
        Console.WriteLine($"parse (first load): {parseTime.TotalMilliseconds:F2} ms");
        Console.WriteLine($"render: {iterations} renders of {messageCount} messages ({text.Length} characters), mean {mean:F1} µs per render");
        return 0;
    }

    /// <summary>A 20-message conversation with two tools, tool calls and tool results: the benchmark's default input.</summary>
    private static Dictionary<string, object?> BenchVariables()
    {
        var messages = new JsonArray { new JsonObject { ["role"] = "system", ["content"] = "You are a concise assistant that explains .NET APIs." } };
        for (var turn = 0; messages.Count < 20; turn++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = $"Question {turn}: what does System.Threading.CancellationToken.Register do, and when should I dispose the registration? Ünïcödé 🚀" });
            if (turn % 3 == 1 && messages.Count <= 17)
            {
                messages.Add(new JsonObject
                {
                    ["role"] = "assistant",
                    ["content"] = "",
                    ["tool_calls"] = new JsonArray { new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "search_docs", ["arguments"] = new JsonObject { ["query"] = $"CancellationToken.Register {turn}", ["limit"] = 3 } } } },
                });
                messages.Add(new JsonObject { ["role"] = "tool", ["name"] = "search_docs", ["content"] = "{\"results\": [\"Registers a delegate that will be called when this CancellationToken is canceled.\"]}" });
            }
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"Answer {turn}: Register adds a callback invoked on cancellation; dispose the returned CancellationTokenRegistration when you no longer need it." });
        }
        while (messages.Count > 20)
        {
            messages.RemoveAt(messages.Count - 1);
        }
        var tools = new JsonArray();
        foreach (var name in new[] { "search_docs", "get_weather" })
        {
            tools.Add(new JsonObject
            {
                ["type"] = "function",
                ["function"] = new JsonObject
                {
                    ["name"] = name,
                    ["description"] = $"The {name} tool.",
                    ["parameters"] = new JsonObject
                    {
                        ["type"] = "object",
                        ["properties"] = new JsonObject { ["query"] = new JsonObject { ["type"] = "string" }, ["limit"] = new JsonObject { ["type"] = "integer" } },
                        ["required"] = new JsonArray { "query" },
                    },
                },
            });
        }
        using var document = JsonDocument.Parse(new JsonObject { ["messages"] = messages, ["tools"] = tools, ["add_generation_prompt"] = true }.ToJsonString());
        return document.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone(), StringComparer.Ordinal);
    }
}
