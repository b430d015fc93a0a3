using RecurFormer.Model.Caching;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Generation;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The tiny HuggingFace fixtures: our model code computes what transformers computes.</summary>
public sealed class FixtureExactnessTests
{
    public static TheoryData<string, int> ModelsAndPrompts()
    {
        var data = new TheoryData<string, int>();
        foreach (var model in new[] { "qwen2-tiny", "llama-tiny", "mamba-tiny" })
        {
            for (var prompt = 0; prompt < 3; prompt++)
            {
                data.Add(model, prompt);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(ModelsAndPrompts))]
    public void Prefill_logits_match_the_reference_within_1e4(string fixture, int prompt)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        using var expected = TestData.Reference(folder, $"logits_{prompt}");
        using var cache = model.CreateCache(256);
        using var logits = model.Forward(new ForwardBatch([TestData.ReferenceIds(folder, $"prompt_{prompt}")], cache.Sequences) { AllLogits = true });

        Assert.Equal(expected.shape, logits.shape);
        var difference = (logits - expected).abs().max().item<float>();
        Assert.True(difference < 1e-4, $"{fixture} prompt {prompt}: max |Δlogit| = {difference}");
    }

    [Theory]
    [MemberData(nameof(ModelsAndPrompts))]
    public void Greedy_generation_with_the_cache_matches_the_reference(string fixture, int prompt)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        var promptIds = TestData.ReferenceIds(folder, $"prompt_{prompt}").Select(id => (int)id).ToArray();
        var expected = TestData.ReferenceIds(folder, $"greedy_{prompt}").Select(id => (int)id).ToArray();

        var generated = new SimpleGenerator(model).Generate(promptIds, expected.Length, new HashSet<int>()).ToArray();

        Assert.Equal(expected, generated);
    }

    [Theory]
    [InlineData("qwen2-tiny")]
    [InlineData("llama-tiny")]
    [InlineData("mamba-tiny")]
    public void Prefill_then_one_decode_step_equals_prefill_of_one_more_token(string fixture)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        var ids = TestData.ReferenceIds(folder, "prompt_2"); // 100 tokens: several scan chunks for Mamba

        using var incremental = model.CreateCache(256);
        model.Forward(new ForwardBatch([ids[..^1]], incremental.Sequences)).Dispose();
        using var stepped = model.Forward(new ForwardBatch([ids[^1..]], incremental.Sequences));

        using var whole = model.CreateCache(256);
        using var all = model.Forward(new ForwardBatch([ids], whole.Sequences));

        var difference = (stepped - all).abs().max().item<float>();
        Assert.True(difference < 1e-4, $"{fixture}: max |Δlogit| = {difference}");
        Assert.Equal(ids.Length, incremental[0].Length);
    }

    [Theory]
    [InlineData("qwen2-tiny")]
    [InlineData("llama-tiny")]
    [InlineData("mamba-tiny")]
    public void Chunked_prefill_equals_one_prefill(string fixture)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        var ids = TestData.ReferenceIds(folder, "prompt_2");
        using var expected = TestData.Reference(folder, "logits_2");

        using var cache = model.CreateCache(256);
        var parts = new List<Tensor>();
        foreach (var (start, length) in new[] { (0, 30), (30, 1), (31, 45), (76, 24) })
        {
            parts.Add(model.Forward(new ForwardBatch([ids[start..(start + length)]], cache.Sequences) { AllLogits = true }));
        }
        using var logits = cat(parts, 0);
        parts.ForEach(p => p.Dispose());

        var difference = (logits - expected).abs().max().item<float>();
        Assert.True(difference < 1e-4, $"{fixture}: max |Δlogit| = {difference}");
    }

    [Theory]
    [InlineData("qwen2-tiny")]
    [InlineData("llama-tiny")]
    [InlineData("mamba-tiny")]
    public void A_batch_of_mixed_lengths_gives_each_sequence_its_own_logits(string fixture)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        var prompts = Enumerable.Range(0, 3).Select(i => TestData.ReferenceIds(folder, $"prompt_{i}")).ToArray();
        var greedy = Enumerable.Range(0, 3).Select(i => TestData.ReferenceIds(folder, $"greedy_{i}")).ToArray();
        using var caches = model.CreateCache(256, sequences: 3);

        // Prefill all three together, then decode all three together, feeding the reference tokens.
        using var first = model.Forward(new ForwardBatch(prompts, caches.Sequences));
        Assert.Equal(greedy.Select(g => g[0]), first.argmax(1).data<long>().ToArray());
        for (var step = 1; step < 8; step++)
        {
            using var logits = model.Forward(new ForwardBatch(greedy.Select(g => new[] { g[step - 1] }).ToArray(), caches.Sequences));
            Assert.Equal(greedy.Select(g => g[step]), logits.argmax(1).data<long>().ToArray());
        }
    }

    [Theory]
    [InlineData("qwen2-tiny")]
    [InlineData("llama-tiny")]
    public void Attention_probabilities_match_the_reference_within_1e5(string fixture)
    {
        var folder = TestData.Fixture(fixture);
        using var model = TestData.Load(folder);
        using var expected = TestData.Reference(folder, "attn_probs_1"); // [layers, heads, 33, 33]
        using var capture = new AttentionCapture();
        using var cache = model.CreateCache(256);

        model.Forward(new ForwardBatch([TestData.ReferenceIds(folder, "prompt_1")], cache.Sequences) { Capture = capture }).Dispose();

        for (var layer = 0; layer < expected.shape[0]; layer++)
        {
            var difference = (capture.Get(layer) - expected[layer]).abs().max().item<float>();
            Assert.True(difference < 1e-5, $"{fixture} layer {layer}: max |Δp| = {difference}");
        }
    }
}
