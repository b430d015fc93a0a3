using RecurFormer.Model.Kernels;
using RecurFormer.Model.Layers;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The RoPE kernel against libtorch's operations (the same RotaryEmbedding.Apply without threads): equal bit for bit.</summary>
public sealed class RotaryKernelTests
{
    /// <summary>
    /// Rows that are a slice of wider ones (as q and k are of the fused qkv projection); head sizes whose half is a scalar
    /// tail only (4), a 16-value vector and an 8-value one (24), all three (28) and whole vectors (32); float32 and
    /// bfloat16, whose every product and sum libtorch rounds.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32, 48, 1)]
    [InlineData(ScalarType.BFloat16, 48, 2)]
    [InlineData(ScalarType.BFloat16, 8, 1)]
    [InlineData(ScalarType.BFloat16, 64, 3)]
    [InlineData(ScalarType.Float32, 64, 2)]
    [InlineData(ScalarType.BFloat16, 56, 2)]
    [InlineData(ScalarType.Float32, 56, 1)]
    public void The_kernel_equals_libtorch_bit_for_bit(ScalarType dtype, int headDim, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(17);
        const int tokens = 37, heads = 3;
        var fused = (randn([tokens, (heads + 2) * headDim], generator: generator) * 3).to_type(dtype);
        var x = fused.narrow(1, headDim, heads * headDim).view(tokens, heads, headDim);       // not contiguous
        var angles = rand([tokens, headDim], generator: generator) * 20;
        var (cos, sin) = (angles.cos().to_type(dtype), angles.sin().to_type(dtype));
        using var threads = new KernelThreads(threadCount);
        Assert.True(RotaryKernel.Supports(x, cos, sin));

        var expected = RotaryEmbedding.Apply(x, cos, sin);
        var actual = RotaryEmbedding.Apply(x, cos, sin, threads);

        Assert.Equal(dtype, actual.dtype);
        var bits = (Tensor t) => t.to_type(ScalarType.Float32).contiguous().data<float>().ToArray().Select(BitConverter.SingleToInt32Bits).ToArray();
        Assert.Equal(bits(expected), bits(actual));
    }
}
