using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Generation;

namespace RecurFormer.Model.Tests;

/// <summary>dotnet-docs-qwen2-16m, a really trained bf16 model, against its float64 reference outputs.</summary>
public sealed class DemoModelTests
{
    [Theory]
    [InlineData("chat")]
    [InlineData("doc")]
    public void Logits_match_the_reference_within_1e3(string prompt)
    {
        using var model = TestData.Load(TestData.DemoTeacher);
        using var expected = TestData.Reference(TestData.DemoTeacher, $"logits_{prompt}");
        using var cache = model.CreateCache(256);
        using var logits = model.Forward(new ForwardBatch([TestData.ReferenceIds(TestData.DemoTeacher, $"prompt_{prompt}")], cache.Sequences) { AllLogits = true });

        var difference = (logits - expected).abs().max().item<float>();
        Assert.True(difference < 1e-3, $"{prompt}: max |Δlogit| = {difference}");
    }

    [Theory]
    [InlineData("chat")]
    [InlineData("doc")]
    public void Greedy_generation_matches_the_48_reference_tokens(string prompt)
    {
        using var model = TestData.Load(TestData.DemoTeacher);
        var promptIds = TestData.ReferenceIds(TestData.DemoTeacher, $"prompt_{prompt}").Select(id => (int)id).ToArray();
        var expected = TestData.ReferenceIds(TestData.DemoTeacher, $"greedy_{prompt}").Select(id => (int)id).ToArray();

        var generated = new SimpleGenerator(model).Generate(promptIds, expected.Length, new HashSet<int>()).ToArray();

        Assert.Equal(expected, generated);
    }
}
