using System.Text.Json.Nodes;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Generation;

namespace RecurFormer.Model.Tests;

/// <summary>Broken checkpoints give one ModelLoadException that names the file or value and what is wrong.</summary>
public sealed class BadCheckpointTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("recurformer-bad-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private void CopyFixture(string name = "qwen2-tiny")
    {
        foreach (var file in Directory.GetFiles(TestData.Fixture(name)))
        {
            File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)));
        }
    }

    private ModelLoadException LoadFails() => Assert.Throws<ModelLoadException>(() => TestData.Load(_folder).Dispose());

    [Fact]
    public void A_folder_without_config_is_not_a_checkpoint()
    {
        var error = LoadFails();
        Assert.Contains("not a checkpoint folder (no config.json)", error.Message);
    }

    [Fact]
    public void A_missing_folder_is_named()
    {
        var missing = Path.Combine(_folder, "nope");
        var error = Assert.Throws<ModelLoadException>(() => TestData.Load(missing));
        Assert.Contains(missing, error.Message);
    }

    [Fact]
    public void An_unsupported_model_type_is_named()
    {
        CopyFixture();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["model_type"] = "gpt_neox";
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var error = LoadFails();
        Assert.Contains("unsupported model_type 'gpt_neox'", error.Message);
    }

    [Fact]
    public void A_config_value_of_the_wrong_type_is_named()
    {
        CopyFixture();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["hidden_size"] = "sixty-four";
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var error = LoadFails();
        Assert.Contains("'hidden_size' must be an integer", error.Message);
    }

    [Fact]
    public void A_truncated_safetensors_file_is_reported()
    {
        CopyFixture();
        var weights = Path.Combine(_folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);

        var error = LoadFails();
        Assert.Contains("model.safetensors: truncated", error.Message);
    }

    [Fact]
    public void A_corrupt_header_is_reported()
    {
        CopyFixture();
        var weights = Path.Combine(_folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        bytes[10] = (byte)'}'; // break the JSON
        File.WriteAllBytes(weights, bytes);

        var error = LoadFails();
        Assert.Contains("model.safetensors: corrupt safetensors header", error.Message);
    }

    [Fact]
    public void A_tensor_with_the_wrong_shape_is_named_with_both_shapes()
    {
        CopyFixture();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["intermediate_size"] = 128;
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var error = LoadFails();
        Assert.Contains("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [160, 64], expected [128, 64]", error.Message);
    }

    [Fact]
    public void A_missing_tensor_is_named()
    {
        CopyFixture();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["num_hidden_layers"] = 4;
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var error = LoadFails();
        Assert.Contains("missing tensor 'model.layers.3.input_layernorm.weight'", error.Message);
    }

    [Fact]
    public void Unused_tensors_mean_the_config_does_not_match()
    {
        CopyFixture();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["num_hidden_layers"] = 2;
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());

        var error = LoadFails();
        Assert.Contains("not used by a qwen2 model", error.Message);
    }

    [Fact]
    public void Prompt_ids_outside_the_vocabulary_are_rejected_with_the_id()
    {
        using var model = TestData.Load(TestData.Fixture("qwen2-tiny"));
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new SimpleGenerator(model).Generate([1, 2, 320], 4, new HashSet<int>()).ToList());
        Assert.Contains("token id 320 is outside the vocabulary (0..319)", error.Message);
    }
}
