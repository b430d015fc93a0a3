using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Layers;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;
using RecurFormer.Toolkit.Analysis;
using RecurFormer.Toolkit.Conversion;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

public sealed class ConversionTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public ConversionTests() => TestData.EnsureTorch();

    public void Dispose() => _temp.Dispose();

    private static long[] Prompt => TestData.ReferenceIds(TestData.QwenTiny, "prompt_2"); // 100 tokens

    [Theory]
    [InlineData(ReplacementKind.Mamba)]
    [InlineData(ReplacementKind.Window)]
    [InlineData(ReplacementKind.WindowMamba)]
    public void Nothing_selected_gives_the_source_logits_exactly(ReplacementKind kind)
    {
        var folder = TestData.Convert(_temp, kind, []);
        using var source = TestData.Load(TestData.QwenTiny);
        using var converted = TestData.Load(folder);
        using var expected = TestData.AllLogits(source, Prompt);
        using var actual = TestData.AllLogits(converted, Prompt);
        Assert.True(expected.eq(actual).all().item<bool>(), "logits differ");
    }

    [Fact]
    public void A_window_covering_the_whole_prompt_gives_the_source_logits_exactly()
    {
        var folder = TestData.Convert(_temp, ReplacementKind.Window, [(0, 0), (1, 1), (2, 0), (2, 1)], new WindowSpec(Prompt.Length, 0));
        using var source = TestData.Load(TestData.QwenTiny);
        using var converted = TestData.Load(folder);
        using var expected = TestData.AllLogits(source, Prompt);
        using var actual = TestData.AllLogits(converted, Prompt);
        Assert.Equal(0f, (expected - actual).abs().max().item<float>(), 1e-6f);
    }

    [Fact]
    public void A_short_window_matches_a_direct_masked_attention_computation()
    {
        var window = new WindowSpec(8, 2);
        var folder = TestData.Convert(_temp, ReplacementKind.Window, [(0, 1), (1, 0), (2, 1)], window);
        using var model = TestData.Load(folder);
        var config = (TransformerConfig)model.Config;
        using var capture = CaptureLayers(model);
        using var source = new SourceWeights(TestData.QwenTiny);
        for (var layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            using var expected = DirectAttention(source, config, layer, capture.LayerInput(layer), config.Heads(layer).WindowGroups, window);
            var difference = (capture.HeadOutputs(layer) - expected).abs().max().item<float>();
            Assert.True(difference < 1e-5, $"layer {layer}: max |Δ| = {difference}");
        }
    }

    /// <summary>Every layer's input and head outputs for the prompt.</summary>
    private static AttentionCapture CaptureLayers(ICausalLM model)
    {
        var capture = new AttentionCapture { RecordsProbabilities = false, RecordsLayers = true };
        using var cache = model.CreateCache(Prompt.Length);
        model.Forward(new ForwardBatch([Prompt], cache.Sequences) { Capture = capture }).Dispose();
        return capture;
    }

    /// <summary>
    /// Attention written out from the source weights: q/k/v projections, RoPE, a boolean mask per group (causal, and
    /// for windowed groups key j visible from query i only if j &lt; sinks or j > i − window), softmax, weighted values.
    /// </summary>
    private static Tensor DirectAttention(SourceWeights weights, TransformerConfig config, int layer, Tensor x, int[] windowGroups, WindowSpec window)
    {
        using var scope = NewDisposeScope();
        var n = x.shape[0];
        var hd = config.HeadDim;
        var prefix = $"model.layers.{layer}.self_attn";
        Tensor Project(string name) => nn.functional.linear(x, weights[$"{prefix}.{name}.weight"]!, weights[$"{prefix}.{name}.bias"]);
        using var rope = new RotaryEmbedding(config.Rope, hd, CPU);
        var (cos, sin) = rope.Tables(Enumerable.Range(0, (int)n).Select(p => (long)p).ToArray(), ScalarType.Float32);
        var q = RotaryEmbedding.Apply(Project("q_proj").view(n, -1, hd), cos, sin);
        var k = RotaryEmbedding.Apply(Project("k_proj").view(n, -1, hd), cos, sin);
        var v = Project("v_proj").view(n, -1, hd);
        var i = arange(n).unsqueeze(1);
        var j = arange(n).unsqueeze(0);
        var causal = j <= i;
        var windowed = causal.logical_and((j < window.Sinks).logical_or(j > i - window.Size));
        var outputs = new List<Tensor>();
        for (var h = 0; h < config.NumAttentionHeads; h++)
        {
            var g = h / config.GroupSize;
            var scores = q.select(1, h).matmul(k.select(1, g).t()) / Math.Sqrt(hd);
            var mask = windowGroups.Contains(g) ? windowed : causal;
            var probabilities = nn.functional.softmax(scores.masked_fill(mask.logical_not(), double.NegativeInfinity), 1);
            outputs.Add(probabilities.matmul(v.select(1, g)));
        }
        return cat(outputs, 1).MoveToOuterDisposeScope();
    }

    [Fact]
    public void A_converted_checkpoint_survives_writing_and_loading_with_identical_logits()
    {
        var folder = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 1), (1, 0), (1, 1)]);
        GiveTheMixersOutputs(folder);
        using var model = TestData.Load(folder);
        using var before = TestData.AllLogits(model, Prompt);
        var copy = _temp.Sub("copy");
        CheckpointFolder.Write(copy, model.Config.Raw, ((TransformerConfig)model.Config).Hybrid.ToJson(), CheckpointFolder.StateDict(model), ScalarType.Float32, folder);
        using var reloaded = TestData.Load(copy);
        using var after = TestData.AllLogits(reloaded, Prompt);
        Assert.True(before.eq(after).all().item<bool>(), "logits differ after a round trip");
        Assert.Equal(TestData.Config(folder)["recurformer"]!.ToJsonString(), TestData.Config(copy)["recurformer"]!.ToJsonString());
    }

    [Theory]
    [InlineData(ReplacementKind.Mamba)]
    [InlineData(ReplacementKind.WindowMamba)]
    public void A_converted_model_gives_the_same_logits_for_prefill_as_for_token_by_token_decode(ReplacementKind kind)
    {
        // A 6 + 2 window: the window-Mamba groups' rings wrap many times over 40 tokens.
        var folder = TestData.Convert(_temp, kind, [(0, 0), (1, 1), (2, 0), (2, 1)], new WindowSpec(6, 2));
        GiveTheMixersOutputs(folder);
        using var model = TestData.Load(folder);
        var ids = Prompt[..40];
        using var prefill = TestData.AllLogits(model, ids);
        using var cache = model.CreateCache(ids.Length);
        for (var t = 0; t < ids.Length; t++)
        {
            using var step = model.Forward(new ForwardBatch([ids[t..(t + 1)]], cache.Sequences));
            var difference = (step[0] - prefill[t]).abs().max().item<float>();
            Assert.True(difference < 1e-4, $"token {t}: max |Δlogit| = {difference}");
        }
    }

    [Fact]
    public void A_fresh_mamba_conversion_silences_the_replaced_heads_and_shrinks_q_k_v()
    {
        var folder = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 0)]);
        using var weights = new SourceWeights(folder);
        Assert.Equal([4L * 8, 64], weights["model.layers.1.self_attn.q_proj.weight"]!.shape);
        Assert.Equal([8L, 64], weights["model.layers.1.self_attn.k_proj.weight"]!.shape);
        Assert.Equal(0f, weights["model.layers.1.self_attn.mamba.out_proj.weight"]!.abs().max().item<float>());
        Assert.Equal([2L * 2 * 4 * 8, 64], weights["model.layers.1.self_attn.mamba.in_proj.weight"]!.shape);
        var config = TestData.Config(folder)["recurformer"]!;
        Assert.Equal("[0]", config["layers"]![1]!["mamba_groups"]!.ToJsonString());
    }

    [Fact]
    public void A_fresh_window_mamba_conversion_is_the_window_model_of_the_same_groups_exactly()
    {
        (int, int)[] groups = [(0, 1), (1, 0), (2, 0), (2, 1)];
        var window = new WindowSpec(8, 2);
        var windowed = TestData.Convert(_temp, ReplacementKind.Window, groups, window, name: "window");
        var hybrid = TestData.Convert(_temp, ReplacementKind.WindowMamba, groups, window, name: "window-mamba");
        using (var weights = new SourceWeights(hybrid))
        {
            // Every head keeps its q/k/v (they all attend); the mixer is there, silent.
            Assert.Equal([8L * 8, 64], weights["model.layers.2.self_attn.q_proj.weight"]!.shape);
            Assert.Equal([2L * 8, 64], weights["model.layers.2.self_attn.k_proj.weight"]!.shape);
            Assert.Equal([2L * 2 * 8 * 8, 64], weights["model.layers.2.self_attn.mamba.in_proj.weight"]!.shape);
            Assert.Equal(0f, weights["model.layers.2.self_attn.mamba.out_proj.weight"]!.abs().max().item<float>());
        }
        var layer = TestData.Config(hybrid)["recurformer"]!["layers"]![2]!;
        Assert.Equal("[0,1]", layer["window_mamba_groups"]!.ToJsonString());
        Assert.Equal("[]", layer["window_groups"]!.ToJsonString());

        using var a = TestData.Load(windowed);
        using var b = TestData.Load(hybrid);
        Assert.Equal("window-mamba", RecurFormer.Toolkit.Evaluation.Evaluator.KindOf((TransformerConfig)b.Config));
        using var expected = TestData.AllLogits(a, Prompt);
        using var actual = TestData.AllLogits(b, Prompt);
        Assert.True(expected.eq(actual).all().item<bool>(), "a silent mixer changed the window model's logits");
    }

    [Fact]
    public void A_window_mamba_head_is_its_window_attention_plus_the_mixer_output()
    {
        var window = new WindowSpec(8, 2);
        var folder = TestData.Convert(_temp, ReplacementKind.WindowMamba, [(0, 1), (2, 0)], window);
        GiveTheMixersOutputs(folder);
        using var model = TestData.Load(folder);
        var config = (TransformerConfig)model.Config;
        using var capture = CaptureLayers(model);
        using var source = new SourceWeights(TestData.QwenTiny);
        var transformer = (TransformerCausalLM)model;
        foreach (var layer in new[] { 0, 2 })
        {
            using var scope = NewDisposeScope();
            var heads = config.Heads(layer);
            var input = capture.LayerInput(layer);
            var expected = DirectAttention(source, config, layer, input, heads.WindowGroups, window);
            // The mixer's output (written independently of the model's forward, from the mixer's weights) lands on
            // the window-Mamba heads, added.
            var mixed = new RecurFormer.Toolkit.Distillation.MixerFunction(transformer.Layers[layer].SelfAttention.Mamba!).Forward(input, 1).detach();
            var columns = tensor(heads.HeadsOf(heads.WindowMambaGroups).SelectMany(h => Enumerable.Range(h * config.HeadDim, config.HeadDim)).Select(c => (long)c).ToArray());
            expected.index_add_(1, columns, mixed, 1);
            Assert.True(mixed.abs().max().item<float>() > 1e-2, $"layer {layer}: the mixer must contribute for the test to mean anything");
            var difference = (capture.HeadOutputs(layer) - expected).abs().max().item<float>();
            Assert.True(difference < 1e-4, $"layer {layer}: max |Δ| = {difference}");
        }
    }

    [Fact]
    public void Selection_takes_the_highest_ratios_across_layers_and_checks_the_model_shape()
    {
        var ranked = GroupSelection.Rank(TestData.TinyReport(), 4);
        Assert.Equal((2, 1), (ranked[0].Layer, ranked[0].Group));
        Assert.Equal(3, GroupSelection.ByReduction(ranked, 0.5).Count);
        Assert.Equal(2, GroupSelection.ByThreshold(ranked, 0.5).Count);
        var llama = (TransformerConfig)RecurFormer.Model.Configuration.ModelConfig.Load(TestData.Fixture("llama-tiny"));
        var error = Assert.Throws<AnalysisFileException>(() => GroupSelection.CheckMatches(TestData.TinyReport(), llama, "tiny.json", "llama-tiny"));
        Assert.Contains("3 layers, 8 heads and 2 KV groups", error.Message);
    }

    [Fact]
    public void An_existing_output_folder_is_refused_unless_forced()
    {
        var folder = _temp.Sub("out");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "x"), "");
        Assert.Throws<OutputExistsException>(() => CheckpointFolder.Prepare(folder, force: false));
        CheckpointFolder.Prepare(folder, force: true);
    }

    /// <summary>A fresh mixer writes zeros (out_proj = 0); give it random outputs so that the tests see it work.</summary>
    private static void GiveTheMixersOutputs(string folder)
    {
        using var generator = new Generator(11);
        TestData.Patch(folder, (name, tensor) => name.EndsWith("mamba.out_proj.weight", StringComparison.Ordinal)
            ? (rand(tensor.shape, generator: generator) - 0.5) * 0.5
            : null);
    }
}

/// <summary>All tensors of a checkpoint folder's model.safetensors, float32, by name.</summary>
internal sealed class SourceWeights : IDisposable
{
    private readonly RecurFormer.Model.Checkpoints.SafeTensorsFile _file;
    private readonly Dictionary<string, Tensor> _loaded = [];

    public SourceWeights(string folder)
    {
        TorchRuntime.EnsureLoaded();
        _file = RecurFormer.Model.Checkpoints.SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
    }

    public Tensor? this[string name] => _file.Contains(name)
        ? _loaded.TryGetValue(name, out var t) ? t : _loaded[name] = _file.Load(name, ScalarType.Float32).DetachFromDisposeScope()
        : null;

    public void Dispose()
    {
        foreach (var tensor in _loaded.Values)
        {
            tensor.Dispose();
        }
        _file.Dispose();
    }
}
