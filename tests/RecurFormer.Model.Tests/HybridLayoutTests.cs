using System.Text.Json.Nodes;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>Windowed KV groups (no new weights: only config.json changes) against plain attention.</summary>
public sealed class HybridLayoutTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("recurformer-window-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>qwen2-tiny (3 layers, 2 KV groups) with the given groups windowed in every layer.</summary>
    private string Windowed(int size, int sinks, params int[] groups)
    {
        foreach (var file in Directory.GetFiles(TestData.Fixture("qwen2-tiny")))
        {
            File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)), overwrite: true);
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        var layout = new HybridLayout
        {
            Layers = Enumerable.Range(0, 3).Select(_ => new LayerReplacement([], groups)).ToArray(),
            Window = new WindowSpec(size, sinks),
        };
        config["recurformer"] = layout.ToJson();
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());
        return _folder;
    }

    /// <summary>Changes <c>recurformer.layers</c> of the folder's config.json in place.</summary>
    private void EditLayers(Action<JsonArray> change)
    {
        var path = Path.Combine(_folder, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        change(config["recurformer"]!["layers"]!.AsArray());
        File.WriteAllText(path, config.ToJsonString());
    }

    private static Tensor Logits(ICausalLM model, long[] ids)
    {
        using var cache = model.CreateCache(256);
        return model.Forward(new ForwardBatch([ids], cache.Sequences) { AllLogits = true });
    }

    [Fact]
    public void A_window_that_covers_the_whole_prompt_gives_the_teacher_logits_exactly()
    {
        var ids = TestData.ReferenceIds(TestData.Fixture("qwen2-tiny"), "prompt_2");
        using var teacher = TestData.Load(TestData.Fixture("qwen2-tiny"));
        using var windowed = TestData.Load(Windowed(size: 100, sinks: 0, 0, 1));
        using var expected = Logits(teacher, ids);
        using var actual = Logits(windowed, ids);
        Assert.Equal(0f, (expected - actual).abs().max().item<float>(), 1e-6f);
    }

    [Fact]
    public void A_short_window_changes_the_logits_and_decode_agrees_with_prefill()
    {
        var ids = TestData.ReferenceIds(TestData.Fixture("qwen2-tiny"), "prompt_2");
        using var teacher = TestData.Load(TestData.Fixture("qwen2-tiny"));
        using var windowed = TestData.Load(Windowed(size: 8, sinks: 2, 1));
        using var plain = Logits(teacher, ids);
        using var all = Logits(windowed, ids);
        Assert.True((plain - all).abs().max().item<float>() > 1e-3, "an 8-token window must change the logits of a 100-token prompt");

        using var cache = windowed.CreateCache(256);
        windowed.Forward(new ForwardBatch([ids[..^1]], cache.Sequences)).Dispose();
        using var last = windowed.Forward(new ForwardBatch([ids[^1..]], cache.Sequences));
        Assert.True((last[0] - all[^1]).abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void A_group_outside_the_model_is_rejected()
    {
        Windowed(8, 2, 2);
        var error = Assert.Throws<ModelLoadException>(() => TestData.Load(_folder));
        Assert.Contains("names KV group 2, but the model has groups 0..1", error.Message);
    }

    [Fact]
    public void A_group_both_windowed_and_window_mamba_is_rejected()
    {
        Windowed(8, 2, 1);
        EditLayers(layers => layers[1]!["window_mamba_groups"] = new JsonArray(1));
        var error = Assert.Throws<ModelLoadException>(() => ModelConfig.Load(_folder));
        Assert.Contains("recurformer.layers[1] lists a KV group twice", error.Message);
    }

    [Fact]
    public void Window_mamba_groups_attend_through_the_window_and_feed_the_mixer()
    {
        Windowed(8, 2, 0);
        EditLayers(layers => layers[2] = new JsonObject { ["window_mamba_groups"] = new JsonArray(1, 0) });
        var parsed = (TransformerConfig)ModelConfig.Load(_folder);
        var heads = parsed.Heads(2);
        Assert.Equal([0, 1], heads.WindowGroups);
        Assert.Equal([0, 1], heads.MixerGroups);
        Assert.Equal([0, 1], heads.AttendingGroups);
        Assert.Empty(heads.MambaGroups);
        Assert.Equal(parsed.NumAttentionHeads * parsed.HeadDim, parsed.MixerShape(2)!.OutputSize);
        Assert.Null(parsed.MixerShape(0));
        Assert.Equal("[0,1]", parsed.Hybrid.ToJson()["layers"]![2]!["window_mamba_groups"]!.ToJsonString());
        Assert.Null(parsed.Hybrid.ToJson()["layers"]![0]!["window_mamba_groups"]);
    }

    [Fact]
    public void Mistral_sliding_window_is_a_window_on_every_group_without_sinks()
    {
        foreach (var file in Directory.GetFiles(TestData.Fixture("llama-tiny")))
        {
            File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)), overwrite: true);
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["model_type"] = "mistral";
        config["sliding_window"] = 8;
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var parsed = (TransformerConfig)ModelConfig.Load(_folder);
        Assert.Equal(new WindowSpec(8, 0), parsed.Hybrid.Window);
        Assert.All(Enumerable.Range(0, 2), layer => Assert.Equal([0, 1, 2], parsed.Heads(layer).WindowGroups));
        Assert.Empty(parsed.Heads(0).FullGroups);
    }
}
