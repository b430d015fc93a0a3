using System.Diagnostics;
using System.Numerics;
using System.Text.Json;
using RecurFormer.StructuredOutput;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Matching;
using RecurFormer.Tokenization;

// Constrained-decoding costs on the demo vocabulary (8,192 tokens), or on --model DIR's:
//   compile  schema -> grammar -> automaton (+ the first mask), 20-property schema, median of runs
//   token    FillAllowed + Accept per generated token, for a first request (masks computed on the way) and a repeat
//   http     with --server URL: decode tok/s of constrained against free requests through that running server
// Prints tables; writes --out FILE (default structured-output-bench.json).
var model = Arg("--model") ?? Path.Combine(FindRoot(), "models", "dotnet-docs-qwen2-16m");
var output = Arg("--out") ?? "structured-output-bench.json";
var runs = int.Parse(Arg("--runs") ?? "15");

var started = Stopwatch.GetTimestamp();
var tokenizer = CheckpointTokenizer.FromPretrained(model);
var vocabulary = TokenVocabulary.FromTokenizer(tokenizer);
var vocabularyMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;

var schema = TwentyProperties();
var zod = TwentyZodProperties();
var cases = new (string Name, Func<GrammarDefinition> Build)[]
{
    ("json_schema, 20 mixed properties", () => OutputGrammars.JsonSchema(schema)),
    ("json_schema, 20 zod properties", () => OutputGrammars.JsonSchema(zod)),
    ("json_object", OutputGrammars.JsonObject),
    ("regex (ISO date)", () => OutputGrammars.Regex(@"[0-9]{4}-[0-9]{2}-[0-9]{2}")),
};

var rows = new List<Dictionary<string, object>>();
Console.WriteLine($"vocabulary: {vocabulary.Size} tokens, {vocabulary.TrieNodes} trie nodes, built in {vocabularyMs:F1} ms");
Console.WriteLine($"{"grammar",-34} {"compile ms",11} {"+1st mask ms",13} {"states",8} {"tokens",7} {"cold µs/tok",12} {"warm µs/tok",12} {"prep ms",9} {"prepped",7} {"served µs/tok",12}");
foreach (var (name, build) in cases)
{
    var compile = new List<double>();
    var firstMask = new List<double>();
    GrammarMatcher? matcher = null;
    for (var i = 0; i < runs; i++)
    {
        var t0 = Stopwatch.GetTimestamp();
        matcher = new GrammarMatcher(Grammar.Compile(build()), vocabulary);
        compile.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        matcher.Allowed(matcher.Initial, int.MaxValue);
        firstMask.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
    }
    // One generation of up to 400 tokens with a fresh matcher (every mask computed on the way), then the same again
    // (all cached); and with a matcher prepared as the server prepares one (GrammarCache: masks warmed for up to 100 ms).
    var fresh = new GrammarMatcher(Grammar.Compile(build()), vocabulary);
    var (tokens, coldUs) = Generate(fresh, seed: 1);
    var (_, warmUs) = Generate(fresh, seed: 1);
    var prepared = new GrammarMatcher(Grammar.Compile(build()), vocabulary);
    var t1 = Stopwatch.GetTimestamp();
    var warmed = prepared.Warm(GrammarCache.WarmBudget);
    var warmMs = Stopwatch.GetElapsedTime(t1).TotalMilliseconds;
    var (_, servedUs) = Generate(prepared, seed: 1);
    Console.WriteLine($"{name,-34} {Median(compile),11:F2} {Median(firstMask),13:F2} {fresh.StateCount,8} {tokens,7} {coldUs,12:F1} {warmUs,12:F2} {warmMs,9:F1} {warmed,7} {servedUs,12:F2}");
    rows.Add(new()
    {
        ["grammar"] = name,
        ["compile_ms_median"] = Math.Round(Median(compile), 3),
        ["compile_and_first_mask_ms_median"] = Math.Round(Median(firstMask), 3),
        ["parse_states"] = fresh.StateCount,
        ["tokens"] = tokens,
        ["cold_us_per_token"] = Math.Round(coldUs, 2),
        ["warm_us_per_token"] = Math.Round(warmUs, 3),
        ["prepare_ms"] = Math.Round(warmMs, 1),
        ["prepared_states"] = warmed,
        ["served_us_per_token"] = Math.Round(servedUs, 2),
    });
}
var http = Arg("--server") is { } server ? await HttpComparison.RunAsync(server, runs: int.Parse(Arg("--http-runs") ?? "5"), maxTokens: 150) : null;
File.WriteAllText(output, JsonSerializer.Serialize(new
{
    model = Path.GetFileName(model),
    vocabulary = vocabulary.Size,
    trie_nodes = vocabulary.TrieNodes,
    vocabulary_ms = Math.Round(vocabularyMs, 1),
    runs,
    results = rows,
    http,
}, new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"wrote {output}");
return 0;

// A generation that takes the first allowed token after a seeded skip: deterministic, and it walks every kind of
// state (keys, strings, numbers, arrays) rather than stopping at the first chance.
static (int Tokens, double MicrosecondsPerToken) Generate(GrammarMatcher matcher, int seed)
{
    var random = new Random(seed);
    var constraint = new GrammarConstraint(matcher, 400);
    var words = new ulong[(matcher.Vocabulary.Size + 63) / 64];
    var allowed = new List<int>();
    var tokens = 0;
    var elapsed = 0.0;
    while (tokens < 400 && !constraint.MustEnd && !(constraint.CanEnd && tokens > 0))
    {
        var t0 = Stopwatch.GetTimestamp();
        Array.Clear(words);
        constraint.FillAllowed(words);
        elapsed += Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
        allowed.Clear();
        for (var w = 0; w < words.Length; w++)
        {
            for (var word = words[w]; word != 0; word &= word - 1)
            {
                allowed.Add(w * 64 + BitOperations.TrailingZeroCount(word));
            }
        }
        if (allowed.Count == 0)
        {
            break;
        }
        var token = allowed[random.Next(allowed.Count)];
        t0 = Stopwatch.GetTimestamp();
        constraint.Accept(token);
        elapsed += Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
        tokens++;
    }
    return (tokens, elapsed / Math.Max(1, tokens));
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted[sorted.Count / 2];
}

// What zod's toJSONSchema / OpenAI strict mode writes: every property required, no length or range keywords.
static JsonElement TwentyZodProperties()
{
    var kinds = new[] { """{"type":"string"}""", """{"type":"number"}""", """{"type":"boolean"}""", """{"type":"array","items":{"type":"string"}}""", """{"type":"string","enum":["low","medium","high"]}""" };
    var properties = string.Join(",", Enumerable.Range(0, 20).Select(i => $"\"field_{i:D2}\":{kinds[i % kinds.Length]}"));
    var required = string.Join(",", Enumerable.Range(0, 20).Select(i => $"\"field_{i:D2}\""));
    return JsonDocument.Parse($$"""{"type":"object","properties":{{{properties}}},"required":[{{required}}],"additionalProperties":false}""").RootElement;
}

// Every kind of keyword the compiler enforces, a third of the properties optional.
static JsonElement TwentyProperties()
{
    var kinds = new[]
    {
        """{"type":"string"}""", """{"type":"integer","minimum":0,"maximum":1000}""", """{"type":"number"}""", """{"type":"boolean"}""",
        """{"type":"string","enum":["red","green","blue"]}""", """{"type":"array","items":{"type":"string"},"maxItems":4}""",
        """{"type":"string","format":"date"}""", """{"anyOf":[{"type":"string"},{"type":"null"}]}""",
        """{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}""", """{"type":"string","maxLength":40}""",
    };
    var properties = string.Join(",", Enumerable.Range(0, 20).Select(i => $"\"field_{i:D2}\":{kinds[i % kinds.Length]}"));
    var required = string.Join(",", Enumerable.Range(0, 20).Where(i => i % 3 != 2).Select(i => $"\"field_{i:D2}\""));
    return JsonDocument.Parse($$"""{"type":"object","properties":{{{properties}}},"required":[{{required}}],"additionalProperties":false}""").RootElement;
}

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static string FindRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "RecurFormer.sln")))
        {
            return dir.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}
