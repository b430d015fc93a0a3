using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Runtime;

namespace RecurFormer.Model.CausalLM;

/// <summary>Loads any supported checkpoint folder into the matching model class.</summary>
public static class CausalLMLoader
{
    public static ICausalLM FromPretrained(string folder, ComputeTarget target)
    {
        if (!Directory.Exists(folder))
        {
            throw new ModelLoadException($"{folder}: folder not found");
        }
        var config = ModelConfig.Load(folder);
        TorchRuntime.EnsureLoaded();
        using var weights = CheckpointWeights.Open(folder, target);
        ICausalLM model = config switch
        {
            TransformerConfig transformer => new TransformerCausalLM(transformer, weights),
            MambaConfig mamba => new MambaCausalLM(mamba, weights),
            _ => throw new ModelLoadException($"{folder}: unsupported model_type '{config.ModelType}'"),
        };
        var unread = weights.Unread;
        if (unread.Count > 0)
        {
            model.Dispose();
            throw new ModelLoadException($"{folder}: {unread.Count} tensor(s) in the checkpoint are not used by a {config.ModelType} model with this config.json, e.g. '{unread[0]}'");
        }
        return model;
    }
}
