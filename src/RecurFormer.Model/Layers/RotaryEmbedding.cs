using RecurFormer.Model.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// Rotary position embedding (RoPE), "rotate half" layout as HuggingFace's Llama/Qwen2. Inverse frequencies are
/// computed in float32 as transformers does, with the default, linear or llama3 scaling.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor _inverseFrequencies; // [headDim / 2], float32

    public RotaryEmbedding(RopeConfig rope, int headDim, Device device)
    {
        using var scope = NewDisposeScope();
        var exponents = arange(0, headDim, 2, dtype: ScalarType.Int64).to_type(ScalarType.Float32) / headDim;
        var inverse = 1.0f / pow(tensor((float)rope.Theta), exponents);
        inverse = rope.Type switch
        {
            "linear" => inverse / (float)rope.Factor,
            "llama3" => Llama3Scaling(inverse, rope),
            _ => inverse,
        };
        _inverseFrequencies = inverse.to(device).DetachFromDisposeScope();
    }

    /// <summary>Llama 3.1 frequency scaling: long wavelengths divided by the factor, short ones kept, a smooth blend between.</summary>
    private static Tensor Llama3Scaling(Tensor inverse, RopeConfig rope)
    {
        var lowWavelength = rope.OriginalMaxPositions / rope.LowFreqFactor;
        var highWavelength = rope.OriginalMaxPositions / rope.HighFreqFactor;
        var wavelength = 2 * Math.PI / inverse;
        var scaled = where(wavelength > lowWavelength, inverse / rope.Factor, inverse);
        var smooth = (rope.OriginalMaxPositions / wavelength - rope.LowFreqFactor) / (rope.HighFreqFactor - rope.LowFreqFactor);
        var blended = (1 - smooth) * scaled / rope.Factor + smooth * scaled;
        var medium = (wavelength >= highWavelength).logical_and(wavelength <= lowWavelength);
        return where(medium, blended, scaled);
    }

    /// <summary>cos and sin tables for the given positions: each [tokens, headDim], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) Tables(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var angles = positions.to_type(ScalarType.Float32).unsqueeze(1) * _inverseFrequencies.unsqueeze(0); // [T, hd/2]
        var doubled = cat([angles, angles], 1);                                                              // [T, hd]
        var cos = doubled.cos().to_type(dtype).MoveToOuterDisposeScope();
        var sin = doubled.sin().to_type(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>Rotates x [T, heads, hd] by the tables [T, hd].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }

    public void Dispose() => _inverseFrequencies.Dispose();
}
