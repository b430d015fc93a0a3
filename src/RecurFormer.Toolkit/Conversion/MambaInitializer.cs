using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Conversion;

/// <summary>
/// Initial weights of the Mamba mixer of some KV groups of one layer (Mamba or window-Mamba; float32, state-dict names under
/// <c>mamba.</c>). The choice, explained in docs/conversion.md:
/// <list type="bullet">
/// <item>the first (output-width) channels of the SSM input read the mixer heads' value projections (each
/// channel the value dimension its head would have averaged), so the state starts in the subspace those heads read;
/// the other channels and the gate start as in Mamba (uniform ±1/√fan-in);</item>
/// <item>the convolution starts as the identity on the current token and the SSM with Mamba's usual A = 1..N,
/// D = 1 and Δ in [0.001, 0.1]: the state is then a set of decaying averages of recent values, a recency head's job;</item>
/// <item><c>out_proj</c> starts at zero: before any training the replaced heads contribute nothing, the known and
/// stable starting point of head pruning, and training moves away from it smoothly. A window-Mamba model therefore
/// starts as exactly the window model of the same groups.</item>
/// </list>
/// </summary>
public static class MambaInitializer
{
    /// <param name="shape">The mixer of the converted layer (<see cref="TransformerConfig.MixerShape"/>).</param>
    /// <param name="valueWeight">v_proj weight of the source layer [kvGroups × headDim, hidden].</param>
    public static Dictionary<string, Tensor> Create(LayerHeads heads, MambaMixerShape shape, Tensor valueWeight, Generator generator)
    {
        var hidden = shape.InputSize;
        var output = shape.OutputSize;
        var inner = shape.InnerSize;
        var state = shape.StateSize;
        var rank = shape.TimeStepRank;
        var headDim = heads.HeadDim;

        // Every number an operation takes is a Scalar made and disposed here: TorchSharp frees an implicit one in its
        // finalizer, which may run while the operation still reads it (docs/runtime.md; a CI run failed that way here).
        using Scalar two = 2, one = 1, identity = 1.0, smallest = 1e-4;
        Tensor Uniform(long rows, long columns, double bound)
        {
            using Scalar scale = bound;
            return rand([rows, columns], generator: generator).mul(two).sub(one).mul(scale);
        }

        var inProj = Uniform(2 * inner, hidden, 1 / Math.Sqrt(hidden));
        var values = valueWeight.to_type(ScalarType.Float32);
        var replacedHeads = heads.HeadsOf(heads.MixerGroups);
        for (var i = 0; i < replacedHeads.Length; i++)
        {
            var group = replacedHeads[i] / heads.GroupSize;
            inProj.narrow(0, i * headDim, headDim).copy_(values.narrow(0, group * headDim, headDim));
        }

        var conv = zeros(inner, 1, shape.ConvKernel);
        conv.select(2, shape.ConvKernel - 1).fill_(identity);
        using Scalar dtMin = Math.Log(1e-3), dtSpan = Math.Log(1e-1) - Math.Log(1e-3);
        var dt = rand([inner], generator: generator).mul(dtSpan).add(dtMin).exp().clamp_min(smallest);
        var dtBias = dt + (-(-dt).expm1()).log();                                   // softplus⁻¹(dt)
        using Scalar firstA = 1, pastLastA = state + 1;

        return new Dictionary<string, Tensor>
        {
            ["in_proj.weight"] = inProj,
            ["conv1d.weight"] = conv,
            ["conv1d.bias"] = zeros(inner),
            ["x_proj.weight"] = Uniform(rank + 2 * state, inner, 1 / Math.Sqrt(inner)),
            ["dt_proj.weight"] = Uniform(inner, rank, 1 / Math.Sqrt(rank)),
            ["dt_proj.bias"] = dtBias,
            ["A_log"] = arange(firstA, pastLastA, dtype: ScalarType.Float32).log().unsqueeze(0).repeat(inner, 1),
            ["D"] = ones(inner),
            ["out_proj.weight"] = zeros(output, inner),
        };
    }
}
