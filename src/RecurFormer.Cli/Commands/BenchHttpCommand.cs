using System.CommandLine;
using System.Text.Json;
using RecurFormer.Cli.Benchmarking;
using RecurFormer.Tokenization;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer bench-http</c>: the benchmark of <c>recurformer bench</c> (same grid, prompts, table and JSON)
/// through a running server's streaming API, so that the server's overhead over the engine shows.
/// </summary>
public static class BenchHttpCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Base URL of a running server.", DefaultValueFactory = _ => "http://127.0.0.1:8000" };
        var apiKey = new Option<string?>("--api-key") { Description = "API key, when the server wants one." };
        var tokenizer = new Option<string>("--tokenizer") { Description = "Checkpoint folder whose tokenizer builds the prompts (the served model's).", DefaultValueFactory = _ => GenerateCommand.DefaultModel };
        var json = new Option<string>("--json") { Description = "Where to write the JSON report.", Required = true };
        var concurrency = new Option<string>("--concurrency") { Description = "Comma-separated concurrencies.", DefaultValueFactory = _ => "1,4,16,64" };
        var promptTokens = new Option<string>("--prompt-tokens") { Description = "Comma-separated prompt lengths.", DefaultValueFactory = _ => "128,1024" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens generated per request (eos ignored).", DefaultValueFactory = _ => 64 };

        var command = new Command("bench-http", "Benchmark a running server through HTTP streaming: the same table and JSON as 'bench'.")
        {
            url, apiKey, tokenizer, json, concurrency, promptTokens, maxTokens,
        };
        command.SetAction(async (parse, cancellation) =>
        {
            var concurrencies = BenchCommand.ParseList(parse.GetValue(concurrency)!, "--concurrency");
            var lengths = BenchCommand.ParseList(parse.GetValue(promptTokens)!, "--prompt-tokens");
            var folder = parse.GetValue(tokenizer)!;
            if (!Directory.Exists(folder))
            {
                throw new UserError($"--tokenizer: the folder '{folder}' does not exist");
            }
            var words = CheckpointTokenizer.FromPretrained(folder);
            var baseUrl = parse.GetValue(url)!;
            using var http = HttpBenchTarget.CreateClient(baseUrl, parse.GetValue(apiKey));
            string model;
            try
            {
                using var models = JsonDocument.Parse(await http.GetStringAsync("v1/models", cancellation));
                model = models.RootElement.GetProperty("data")[0].GetProperty("id").GetString()!;
            }
            catch (HttpRequestException error)
            {
                throw new UserError($"--url {baseUrl}: {error.Message}");
            }
            var prompts = new BenchPrompts(words, words.VocabSize);
            var runs = await BenchmarkRunner.Run([new(new HttpBenchTarget($"{model} (http)", http), prompts.Make)], concurrencies, lengths, parse.GetValue(maxTokens), Console.Error);
            var report = new BenchmarkReport("http", baseUrl, runs, null);
            report.PrintTable(Console.Out);
            report.WriteJson(parse.GetValue(json)!);
            return 0;
        });
        return command;
    }
}
