using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>The Mamba mixer's causal depthwise convolution followed by SiLU, for training on whole sequences.</summary>
public static class CausalConvolution
{
    /// <summary>
    /// u [B, L, dI] (each sequence from an empty convolution window), weight [dI, 1, K], bias [dI] or null → SiLU of the
    /// convolution [B, L, dI]: the CPU kernels (<see cref="CausalConvFunction"/>) where they run, libtorch's grouped
    /// conv1d elsewhere (CUDA).
    /// </summary>
    public static Tensor Training(Tensor u, Tensor weight, Tensor? bias, KernelThreads? threads = null)
    {
        if (SelectiveScanFunction.Supports(u.device) && u.dtype == ScalarType.Float32 && weight.dtype == ScalarType.Float32)
        {
            return CausalConvFunction.Apply(u, weight, bias, threads);
        }
        var (inner, kernel) = (u.shape[2], weight.shape[^1]);
        var padded = nn.functional.pad(u.transpose(1, 2), [kernel - 1, 0]);                       // [B, dI, L+K-1]
        return nn.functional.silu(nn.functional.conv1d(padded, weight, bias, groups: inner)).transpose(1, 2);
    }
}
