using RecurFormer.Tokenization;

namespace RecurFormer.Cli.Benchmarking;

/// <summary>
/// Deterministic prompts of an exact token length: documentation-like text from the demo model's domain when a
/// tokenizer is at hand (different for every request, so no two requests share a prefix), else seeded random ids.
/// </summary>
public sealed class BenchPrompts(CheckpointTokenizer? tokenizer, int vocabSize)
{
    private static readonly string[] Members =
    [
        "System.Collections.Generic.List`1.Add", "System.String.Trim", "System.Threading.CancellationToken.Equals",
        "System.Text.Json.JsonSerializer.Deserialize", "System.IO.File.ReadAllText", "System.Uri.IsHexEncoding",
        "Microsoft.AspNetCore.Http.HttpContext.Request", "System.Linq.Enumerable.Select", "System.Net.Http.HttpClient.SendAsync",
    ];

    public int[] Make(int length, int request)
    {
        if (tokenizer is null)
        {
            var random = new Random(request * 7919 + length);
            return Enumerable.Range(0, length).Select(_ => random.Next(3, vocabSize)).ToArray();
        }
        var ids = new List<int>();
        for (var line = 0; ids.Count < length; line++)
        {
            var member = Members[(request + line) % Members.Length];
            ids.AddRange(tokenizer.Encode($"{member}\nRequest {request}, line {line}: returns the value that {member} documents for this overload.\n", addBosToken: false));
        }
        return ids.Take(length).ToArray();
    }
}
