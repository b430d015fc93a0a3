using RecurFormer.Model.Kernels;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// The function of a <see cref="MambaMixer"/>, recomputed from its parameters for training on equal-length
/// sequences: the same in_proj → causal conv → SiLU → (Δ, B, C) → selective scan → + D·x → SiLU(z) gate → out_proj,
/// all sequences of the batch at once. The scan is <see cref="TensorScan.TrainingGated"/>, as in the mixer's own training
/// forward: on the CPU the forward and backward kernels, linear in the length, one autograd node per layer. A test
/// pins it to the model's mixer (same outputs within float32 rounding), so the trained parameters mean the same thing
/// in both.
/// </summary>
public sealed class MixerFunction
{
    private readonly Tensor _inProj, _convWeight, _xProj, _dtWeight, _dtBias, _aLog, _d, _outProj;
    private readonly Tensor? _convBias, _inBias, _outBias;
    private readonly MambaMixerShape _shape;
    private readonly ScalarType _matmul;

    /// <param name="matmulDType">
    /// dtype of the mixer's products (in_proj, x_proj, dt_proj, out_proj), forward and backward; the weights, their
    /// gradients and everything else stay float32. bfloat16 is ~4–6× faster on a CPU with bfloat16 instructions (docs/conversion.md).
    /// </param>
    public MixerFunction(MambaMixer mixer, ScalarType matmulDType = ScalarType.Float32)
    {
        _shape = mixer.Shape;
        _matmul = matmulDType;
        var p = mixer.named_parameters().ToDictionary(n => n.name, n => (Tensor)n.parameter);
        _inProj = p["in_proj.weight"];
        _inBias = p.GetValueOrDefault("in_proj.bias");
        _convWeight = p["conv1d_weight"];
        _convBias = p.GetValueOrDefault("conv1d_bias");
        _xProj = p["x_proj.weight"];
        _dtWeight = p["dt_proj.weight"];
        _dtBias = p["dt_proj.bias"];
        _aLog = p["A_log"];
        _d = p["D"];
        _outProj = p["out_proj.weight"];
        _outBias = p.GetValueOrDefault("out_proj.bias");
    }

    /// <summary>x [B × L, input] (B sequences of L tokens, packed, each from an empty state) → [B × L, output].</summary>
    /// <param name="threads">Threads for the convolution and scan kernels (a worker's own); null: the process's.</param>
    public Tensor Forward(Tensor x, int sequences, KernelThreads? threads = null)
    {
        using var scope = NewDisposeScope();
        var length = x.shape[0] / sequences;
        var inner = _shape.InnerSize;
        var projected = Project(x, _inProj, _inBias).view(sequences, length, 2 * inner);
        var u = projected.narrow(2, 0, inner).to_type(ScalarType.Float32);             // [B, L, dI]
        var gate = projected.narrow(2, inner, inner).to_type(ScalarType.Float32);

        // Causal depthwise convolution: output t sees inputs t-K+1..t (zeros before the start).
        var xc = CausalConvolution.Training(u, _convWeight, _convBias, threads);                  // [B, L, dI]

        // x_proj and dt_proj in the products' dtype too, as Mamba's own training runs them under autocast (float32
        // they ran at a sixth of bfloat16's rate: 10.8 ms of a 512-token share for 4% of its FLOP); their outputs, the
        // weights, the scan and dt_proj's bias (added in float32, as the reference adds it inside the scan) stay float32.
        var parameters = Project(xc, _xProj, null);
        var rank = _shape.TimeStepRank;
        var state = _shape.StateSize;
        var dtRaw = Project(parameters.narrow(2, 0, rank), _dtWeight, null) + _dtBias;  // [B, L, dI], Δ = softplus of it
        var b = parameters.narrow(2, rank, state);                                       // [B, L, N]
        var c = parameters.narrow(2, rank + state, state);
        var a = -_aLog.exp();                                                            // [dI, N]

        // softplus on Δ's way in and the SiLU(gate) on y's way out run inside the scan kernels.
        var y = TensorScan.TrainingGated(xc, dtRaw, b, c, a, _d, gate, threads);         // [B × L, dI]
        return Project(y, _outProj, _outBias).MoveToOuterDisposeScope();
    }

    private Tensor Project(Tensor x, Tensor weight, Tensor? bias) => Linear.Product(x, weight, bias, _matmul);
}
