using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The CPU kernels of silu(gate) · up against libtorch's silu and mul, forward and backward.</summary>
public sealed class SwiGluTests
{
    /// <summary>
    /// float32: output and ∂[gate | up] within 1e-4 (relative to the largest value, where above 1); the gate spans
    /// ±100, where libtorch's exp over- and underflows. A width that is not a multiple of 16 takes the scalar tail.
    /// </summary>
    [Theory]
    [InlineData(5, 64, 1, false)]
    [InlineData(7, 40, 2, true)]     // rows that are columns of a transposed tensor (not contiguous)
    [InlineData(1, 3, 3, false)]
    public void The_kernels_equal_libtorch_in_float32(int rows, int width, int threadCount, bool transposed)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(31);
        var gateUp = cat([rand([rows, width], generator: generator) * 200 - 100, randn([rows, width], generator: generator)], 1);
        gateUp = transposed ? gateUp.t().contiguous().t() : gateUp;
        Assert.True(SwiGluFunction.Supports(gateUp));
        var upstream = randn([rows, width], generator: generator);

        var expected = gateUp.clone().requires_grad_(true);
        var reference = nn.functional.silu(expected.narrow(1, 0, width)) * expected.narrow(1, width, width);
        (reference * upstream).sum().backward();

        using var threads = new KernelThreads(threadCount);
        var actual = gateUp.clone().requires_grad_(true);
        var output = SwiGluFunction.Apply(actual, threads);
        (output * upstream).sum().backward();

        SelectiveScanTests.AssertClose("y", reference, output);
        SelectiveScanTests.AssertClose("∂[gate | up]", expected.grad!, actual.grad!);
        using (no_grad())
        {
            SelectiveScanTests.AssertClose("y without autograd", reference, SwiGluFunction.Apply(gateUp, threads));
        }
    }

    /// <summary>bfloat16 rows in, bfloat16 out: within bfloat16's rounding (one rounding here, two or three in libtorch).</summary>
    [Theory]
    [InlineData(48)]
    [InlineData(40)]   // two vectors and a scalar tail of 8
    public void The_kernels_equal_libtorch_in_bfloat16(int width)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(37);
        const int rows = 9;
        var gateUp = (randn([rows, 2 * width], generator: generator) * 3).to_type(ScalarType.BFloat16);
        var upstream = randn([rows, width], generator: generator).to_type(ScalarType.BFloat16);

        var expected = gateUp.to_type(ScalarType.Float32).requires_grad_(true);
        var reference = nn.functional.silu(expected.narrow(1, 0, width)) * expected.narrow(1, width, width);
        (reference * upstream.to_type(ScalarType.Float32)).sum().backward();

        var actual = gateUp.clone().requires_grad_(true);
        var output = SwiGluFunction.Apply(actual, KernelThreads.Single);
        (output * upstream).sum().backward();

        Assert.Equal(ScalarType.BFloat16, output.dtype);
        Assert.Equal(ScalarType.BFloat16, actual.grad!.dtype);
        AssertWithinBf16("y", reference, output);
        AssertWithinBf16("∂[gate | up]", expected.grad!, actual.grad!);
    }

    /// <summary>
    /// The kernels round to bfloat16 as libtorch does (nearest, ties to even), bit for bit: with gate ≥ 20, silu(gate)
    /// is gate itself in float32, and the product of two bfloat16 values is exact in float32, so libtorch's
    /// (gate · up).to(bfloat16) is the one correct answer (ties included: such products often end in exactly half a unit).
    /// </summary>
    [Fact]
    public void Bfloat16_results_are_rounded_as_libtorch_rounds()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(41);
        const int rows = 64, width = 256;
        var gate = (rand([rows, width], generator: generator) * 20 + 20).to_type(ScalarType.BFloat16);
        var up = (randn([rows, width], generator: generator) * 1000).to_type(ScalarType.BFloat16);
        var expected = (gate.to_type(ScalarType.Float32) * up.to_type(ScalarType.Float32)).to_type(ScalarType.BFloat16);
        var actual = SwiGluFunction.Apply(cat([gate, up], 1), KernelThreads.Single);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Assert.Equal(expected.to_type(ScalarType.Float32).data<float>().ToArray(), actual.to_type(ScalarType.Float32).data<float>().ToArray()); // exact: bfloat16 → float32 loses nothing
    }

    private static void AssertWithinBf16(string what, Tensor expected, Tensor actual)
    {
        var difference = (expected - actual.to_type(ScalarType.Float32)).abs();
        var allowed = expected.abs() * (1.0 / 128) + 1e-3;   // bfloat16 keeps 8 significant bits
        Assert.True((difference <= allowed).all().item<bool>(), $"{what}: max |Δ| = {difference.max().item<float>()}");
    }
}
