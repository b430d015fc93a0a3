using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The CPU kernels of the mixer's causal convolution + SiLU against libtorch's grouped conv1d and SiLU.</summary>
public sealed class CausalConvTests
{
    /// <summary>Outputs and the gradients of x, the weights and the bias within 1e-4 (relative to the largest value, where above 1).</summary>
    [Theory]
    [InlineData(1, 1, 16, 4, 1, true)]     // one token: only the last tap sees an input
    [InlineData(3, 37, 40, 4, 1, true)]    // three sequences, a partial vector of channels
    [InlineData(2, 64, 96, 2, 3, false)]   // kernel 2, no bias, three threads
    [InlineData(2, 3, 40, 4, 2, true)]     // fewer tokens than taps, a partial vector, two threads
    [InlineData(2, 20, 24, 1, 2, true)]    // kernel 1: a per-channel scale, no past input
    public void The_convolution_and_its_gradients_equal_libtorch(int sequences, int tokens, int inner, int kernel, int threadCount, bool withBias)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(29);
        var x = randn([sequences, tokens, inner], generator: generator);
        var weight = randn([inner, 1, kernel], generator: generator) * 0.5;
        var bias = withBias ? randn([inner], generator: generator) : null;
        var upstream = randn([sequences, tokens, inner], generator: generator);

        Tensor[] Leaves() => [x.clone().requires_grad_(true), weight.clone().requires_grad_(true), (bias ?? zeros(inner)).clone().requires_grad_(withBias)];
        var expected = Leaves();
        var padded = nn.functional.pad(expected[0].transpose(1, 2), [kernel - 1, 0]);
        var reference = nn.functional.silu(nn.functional.conv1d(padded, expected[1], withBias ? expected[2] : null, groups: inner)).transpose(1, 2);
        (reference * upstream).sum().backward();

        using var threads = new KernelThreads(threadCount);
        var actual = Leaves();
        var output = CausalConvFunction.Apply(actual[0], actual[1], withBias ? actual[2] : null, threads);
        (output * upstream).sum().backward();

        SelectiveScanTests.AssertClose("y", reference, output);
        SelectiveScanTests.AssertClose("∂x", expected[0].grad!, actual[0].grad!);
        SelectiveScanTests.AssertClose("∂w", expected[1].grad!, actual[1].grad!);
        if (withBias)
        {
            SelectiveScanTests.AssertClose("∂b", expected[2].grad!, actual[2].grad!);
        }
    }
}
