using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using RecurFormer.Tokenization;
using RecurFormer.Toolkit.Data;
using RecurFormer.Toolkit.Evaluation;

namespace RecurFormer.Toolkit.Tests;

/// <summary>
/// bfloat16 compute (the CPU default where the CPU has bfloat16 instructions) against float32 on every line of
/// validation.jsonl: the stated tolerance is 0.5% of perplexity, per kind and packed (measured: within 0.05%).
/// </summary>
public sealed class BFloat16PerplexityTests
{
    private const double Tolerance = 0.005;

    [Fact]
    public void The_teacher_in_bfloat16_stays_within_half_a_percent_of_its_float32_perplexity()
    {
        var folder = Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-qwen2-16m");
        var data = Path.Combine(TestData.RepositoryRoot, "tests", "RecurFormer.Tokenization.Tests", "Data", "validation.jsonl");
        var examples = ValidationExample.ReadAll(new JsonlReader(data));
        Assert.Equal(722, examples.Count);
        var tokenizer = CheckpointTokenizer.FromPretrained(folder);

        JsonObject Perplexity(string dtype)
        {
            using var model = CausalLMLoader.FromPretrained(folder, TorchRuntime.Initialize(new TorchOptions { DType = dtype }));
            return new Evaluator(model, tokenizer, new EvalOptions { MaxAnswerTokens = 0 }).Evaluate(examples)["perplexity"]!.AsObject();
        }

        var single = Perplexity("float32");
        var half = Perplexity("bfloat16");
        foreach (var kind in new[] { "all", "doc", "qa", "packed512" })
        {
            var ratio = half[kind]!.GetValue<double>() / single[kind]!.GetValue<double>();
            Assert.True(Math.Abs(ratio - 1) <= Tolerance, $"{kind}: bfloat16 perplexity is {ratio:F4} × float32's");
        }
    }
}
