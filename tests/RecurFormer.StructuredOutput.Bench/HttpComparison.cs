using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

/// <summary>
/// Decode speed of constrained against free requests through a running server (SSE streaming, one request at a time):
/// tokens per second between the first and the last streamed token, median of the runs. The free request ignores
/// EOS and the constrained one writes a long string under a schema, so both generate max_tokens tokens.
/// </summary>
internal static class HttpComparison
{
    public static async Task<List<Dictionary<string, object>>> RunAsync(string server, int runs, int maxTokens)
    {
        using var http = new HttpClient { BaseAddress = new Uri(server.TrimEnd('/') + "/"), Timeout = TimeSpan.FromMinutes(5) };
        var schema = JsonNode.Parse("""{"type":"object","properties":{"explanation":{"type":"string","maxLength":4000}},"required":["explanation"]}""");
        var kinds = new (string Name, JsonObject Extra)[]
        {
            ("free", new JsonObject { ["ignore_eos"] = true }),
            ("json_schema", new JsonObject { ["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "x", ["schema"] = schema!.DeepClone() } } }),
            ("tools auto", new JsonObject
            {
                ["ignore_eos"] = true,
                ["tool_choice"] = "auto",
                ["tools"] = JsonNode.Parse("""[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"""),
            }),
        };
        foreach (var (_, extra) in kinds)
        {
            await Measure(http, extra, maxTokens); // warm up: JIT, and the grammar's masks on first use
        }
        var speeds = kinds.ToDictionary(k => k.Name, _ => new List<double>());
        for (var run = 0; run < runs; run++)
        {
            foreach (var (name, extra) in kinds)
            {
                speeds[name].Add(await Measure(http, extra, maxTokens));
            }
        }
        var free = Median(speeds["free"]);
        Console.WriteLine($"{"request",-14} {"tok/s",8} {"vs free",8}");
        var rows = new List<Dictionary<string, object>>();
        foreach (var (name, values) in speeds)
        {
            var median = Median(values);
            Console.WriteLine($"{name,-14} {median,8:F1} {median / free,8:P0}");
            rows.Add(new() { ["request"] = name, ["tokens_per_second_median"] = Math.Round(median, 1), ["relative_to_free"] = Math.Round(median / free, 3), ["runs"] = values.Count, ["max_tokens"] = maxTokens });
        }
        return rows;
    }

    private static async Task<double> Measure(HttpClient http, JsonObject extra, int maxTokens)
    {
        var body = new JsonObject
        {
            ["messages"] = JsonNode.Parse("""[{"role":"system","content":"You are a concise assistant that explains .NET APIs."},{"role":"user","content":"Explain System.Threading.CancellationToken.Equals."}]"""),
            ["max_tokens"] = maxTokens,
            ["temperature"] = 0,
            ["stream"] = true,
        };
        foreach (var (key, value) in extra)
        {
            body[key] = value!.DeepClone();
        }
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        long first = 0, last = 0;
        var chunks = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: {", StringComparison.Ordinal))
            {
                continue;
            }
            using var chunk = JsonDocument.Parse(line["data: ".Length..]);
            var choices = chunk.RootElement.GetProperty("choices");
            if (choices.GetArrayLength() == 0 || !choices[0].GetProperty("delta").TryGetProperty("content", out var content) || content.GetString() is not { Length: > 0 })
            {
                continue;
            }
            last = Stopwatch.GetTimestamp();
            first = first == 0 ? last : first;
            chunks++;
        }
        return chunks < 2 ? 0 : (chunks - 1) / Stopwatch.GetElapsedTime(first, last).TotalSeconds;
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
}
