using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Layers;

/// <summary>
/// Rotary position embedding (RoPE), "rotate half" layout as HuggingFace's Llama/Qwen2. Inverse frequencies are
/// computed in float32 as transformers does, with the default, linear or llama3 scaling. cos/sin of every position
/// seen so far are kept in a table that grows by doubling: a forward picks its rows instead of recomputing them, and
/// the CPU kernels read the float32 table directly.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor _inverseFrequencies; // [headDim / 2], float32
    private readonly int _headDim;
    private readonly Device _device;
    private Tensor? _cos, _sin;                   // [positions, headDim] in the table dtype
    private Tensor? _cpuCos, _cpuSin;             // [positions, headDim / 2] float32 on the CPU (kernels)
    private int _positions;

    public RotaryEmbedding(RopeConfig rope, int headDim, Device device)
    {
        _headDim = headDim;
        _device = device;
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

    /// <summary>Builds the tables (and the kernels' float32 copy) for positions 0..<paramref name="positions"/>-1 now.</summary>
    public void Prepare(int positions)
    {
        Cover(positions);
        if (_device.type == DeviceType.CPU)
        {
            KernelTables(positions - 1);
        }
    }

    /// <summary>Makes the table cover positions 0..<paramref name="positions"/>-1 (growing it by doubling).</summary>
    private void Cover(int positions)
    {
        if (positions <= _positions)
        {
            return;
        }
        var size = Math.Max(positions, Math.Max(256, _positions * 2));
        using var scope = NewDisposeScope();
        var angles = arange(size, dtype: ScalarType.Float32, device: _device).unsqueeze(1) * _inverseFrequencies.unsqueeze(0); // [P, hd/2]
        var doubled = cat([angles, angles], 1);                                                                                   // [P, hd]
        _cos?.Dispose();
        _sin?.Dispose();
        _cos = doubled.cos().DetachFromDisposeScope();
        _sin = doubled.sin().DetachFromDisposeScope();
        _cpuCos?.Dispose();
        _cpuSin?.Dispose();
        _cpuCos = _cpuSin = null;
        _positions = size;
    }

    /// <summary>cos and sin tables for the given positions: each [tokens, headDim], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) Tables(long[] positions, ScalarType dtype)
    {
        Cover((int)positions.Max() + 1);
        using var scope = NewDisposeScope();
        var rows = tensor(positions, device: _device);
        var cos = _cos!.index_select(0, rows).to_type(dtype).MoveToOuterDisposeScope();
        var sin = _sin!.index_select(0, rows).to_type(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>float32 cos / sin of one position for the CPU kernels: headDim / 2 values each (valid until the next call that grows the table).</summary>
    internal unsafe (IntPtr Cos, IntPtr Sin) KernelTables(int maxPosition)
    {
        Cover(maxPosition + 1);
        if (_cpuCos is null)
        {
            using var scope = NewDisposeScope();
            _cpuCos = _cos!.narrow(1, 0, _headDim / 2).to(CPU).contiguous().DetachFromDisposeScope();
            _cpuSin = _sin!.narrow(1, 0, _headDim / 2).to(CPU).contiguous().DetachFromDisposeScope();
        }
        return ((IntPtr)TensorMemory.Pointer<float>(_cpuCos), (IntPtr)TensorMemory.Pointer<float>(_cpuSin!));
    }

    /// <summary>Rotates x [T, heads, hd] by the tables [T, hd].</summary>
    /// <param name="threads">Where the CPU kernel runs, when x needs no gradient (<see cref="RotaryKernel"/>); libtorch's operations otherwise.</param>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, KernelThreads? threads = null)
    {
        if (threads is not null && RotaryKernel.Supports(x, cos, sin))
        {
            return RotaryKernel.Apply(x, cos, sin, threads);
        }
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _inverseFrequencies.Dispose();
        _cos?.Dispose();
        _sin?.Dispose();
        _cpuCos?.Dispose();
        _cpuSin?.Dispose();
    }
}
