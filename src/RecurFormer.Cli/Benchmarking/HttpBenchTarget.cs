using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>
/// Requests through a running server's <c>/v1/completions</c>, streamed, so that the figures include HTTP, JSON and
/// SSE: the same prompts and settings as <see cref="EngineBenchTarget"/> (greedy, eos ignored, exactly max-tokens).
/// A token counts when its SSE chunk arrives; a token whose text is held back (half a UTF-8 character) arrives with
/// the next one.
/// </summary>
public sealed class HttpBenchTarget(string name, HttpClient http) : IBenchTarget
{
    public string Name => name;

    public async Task<RequestMeasurement> Run(int[] promptIds, int maxTokens, CancellationToken cancellation)
    {
        var body = JsonSerializer.Serialize(new { prompt = promptIds, max_tokens = maxTokens, temperature = 0, ignore_eos = true, stream = true });
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        var measurement = new RequestMeasurement();
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellation);
        if (!response.IsSuccessStatusCode)
        {
            throw new UserError($"{name}: the server answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellation)}");
        }
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellation));
        while (await reader.ReadLineAsync(cancellation) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
            {
                continue; // blank separators, keep-alive comments, event names
            }
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                break;
            }
            using var chunk = JsonDocument.Parse(data);
            if (chunk.RootElement.TryGetProperty("error", out var error))
            {
                throw new UserError($"{name}: the request failed: {error}");
            }
            var choices = chunk.RootElement.GetProperty("choices");
            if (choices.GetArrayLength() > 0 && choices[0].GetProperty("text").GetString() is { Length: > 0 })
            {
                measurement.TokenArrived();
            }
        }
        measurement.FinishedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        return measurement;
    }

    public static HttpClient CreateClient(string url, string? apiKey)
    {
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue, PooledConnectionLifetime = TimeSpan.FromMinutes(10) };
        var client = new HttpClient(handler) { BaseAddress = new Uri(url.TrimEnd('/') + "/"), Timeout = TimeSpan.FromMinutes(30) };
        if (!string.IsNullOrEmpty(apiKey))
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }
        return client;
    }
}
