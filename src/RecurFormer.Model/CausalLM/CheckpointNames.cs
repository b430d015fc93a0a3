using RecurFormer.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// A model's parameters under their checkpoint names: module paths are the HuggingFace state-dict names, except
/// that fused projections split back into theirs and TorchSharp's <c>conv1d_weight</c>/<c>conv1d_bias</c> fields are
/// <c>conv1d.weight</c>/<c>conv1d.bias</c> on disk.
/// </summary>
internal static class CheckpointNames
{
    public static IEnumerable<(string Name, Tensor Tensor)> Of(nn.Module model)
    {
        foreach (var (name, parameter) in model.named_parameters(recurse: false))
        {
            yield return (name, parameter);
        }
        foreach (var (path, module) in model.named_modules())
        {
            if (module is Linear linear)
            {
                foreach (var entry in linear.CheckpointTensors())
                {
                    yield return entry;
                }
                continue;
            }
            foreach (var (name, parameter) in module.named_parameters(recurse: false))
            {
                yield return (Rename($"{path}.{name}"), parameter);
            }
        }
    }

    private static string Rename(string name) =>
        name.Replace(".conv1d_weight", ".conv1d.weight", StringComparison.Ordinal).Replace(".conv1d_bias", ".conv1d.bias", StringComparison.Ordinal);
}
