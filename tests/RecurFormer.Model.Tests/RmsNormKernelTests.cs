using RecurFormer.Model.Kernels;
using RecurFormer.Model.Layers;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The training kernels of RMSNorm against <see cref="RmsNorm"/>'s libtorch form, forward and backward.</summary>
public sealed class RmsNormKernelTests
{
    /// <summary>float32: y, ∂x and ∂weight within 1e-5 of the largest value; a width of 40 takes a scalar tail of 8.</summary>
    [Theory]
    [InlineData(384)]
    [InlineData(40)]
    public void The_kernels_equal_libtorch_in_float32(int width)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(47);
        var (reference, expectedX, expectedW, output, actualX, actualW) = Both(Inputs(width, ScalarType.Float32, generator));
        AssertClose("y", reference, output, 1e-5);
        AssertClose("∂x", expectedX.grad!, actualX.grad!, 1e-5);
        AssertClose("∂weight", expectedW.grad!, actualW.grad!, 1e-5);
    }

    /// <summary>
    /// bfloat16: y equal to libtorch's but for one rounding step in a few values (rsqrt and the sums differ in their
    /// last float32 bits), ∂x within bfloat16's rounding; ∂weight is summed over rows in float32 here.
    /// </summary>
    [Theory]
    [InlineData(384)]
    [InlineData(40)]
    public void The_kernels_equal_libtorch_in_bfloat16(int width)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(53);
        var (reference, expectedX, expectedW, output, actualX, actualW) = Both(Inputs(width, ScalarType.BFloat16, generator));
        Assert.Equal(ScalarType.BFloat16, output.dtype);
        Assert.Equal(ScalarType.BFloat16, actualX.grad!.dtype);
        AssertClose("y", reference, output, 8e-3);
        var unequal = (reference != output).sum().item<long>();
        Assert.True(unequal <= reference.numel() / 100, $"{unequal} of {reference.numel()} outputs differ from libtorch's");
        AssertClose("∂x", expectedX.grad!, actualX.grad!, 8e-3);
        AssertClose("∂weight", expectedW.grad!, actualW.grad!, 8e-3);
    }

    /// <summary>RmsNorm with an input that needs a gradient (the kernels' case) gives the values and ∂x of its libtorch form.</summary>
    [Fact]
    public void A_norm_in_training_gives_libtorch_values_and_gradients()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(59);
        var (x, weight, upstream) = Inputs(64, ScalarType.BFloat16, generator);
        var norm = new RmsNorm(weight.clone(), 1e-6);
        var (expectedX, actualX) = (x.clone().requires_grad_(true), x.clone().requires_grad_(true));
        var reference = Reference(expectedX, weight);
        (reference * upstream).sum().backward();
        var output = norm.forward(actualX);
        (output * upstream).sum().backward();
        AssertClose("y", Reference(x, weight), output, 8e-3);
        AssertClose("∂x", expectedX.grad!, actualX.grad!, 8e-3);
    }

    /// <summary>
    /// Where no gradient is asked for (an input without one, or under no_grad), RmsNorm runs the kernel's forward alone:
    /// the training kernel's values to the bit, libtorch's within one rounding step, and no autograd graph.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float32)]
    public void Without_gradients_a_norm_runs_the_kernel_forward_alone(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(61);
        var (x, weight, _) = Inputs(384, dtype, generator);
        var norm = new RmsNorm(weight.clone(), 1e-6);
        var kernel = RmsNormFunction.Apply(x.clone().requires_grad_(true), weight, 1e-6).detach();
        var output = norm.forward(x);
        Assert.False(output.requires_grad);
        Assert.True(output.eq(kernel).all().item<bool>(), "the forward alone differs from the training kernel's forward");
        using (no_grad())
        {
            Assert.True(norm.forward(x.clone().requires_grad_(true)).eq(kernel).all().item<bool>(), "under no_grad the norm took another path");
        }
        AssertClose("y", Reference(x, weight), output, dtype == ScalarType.Float32 ? 1e-5 : 8e-3);
    }

    /// <summary>The libtorch form and the kernels on the same inputs, each with its gradients under the upstream gradient.</summary>
    private static (Tensor Reference, Tensor ExpectedX, Tensor ExpectedW, Tensor Output, Tensor ActualX, Tensor ActualW) Both((Tensor X, Tensor Weight, Tensor Upstream) inputs)
    {
        var (x, weight, upstream) = inputs;
        var (expectedX, expectedW) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true));
        var reference = Reference(expectedX, expectedW);
        (reference * upstream).sum().backward();
        var (actualX, actualW) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true));
        var output = RmsNormFunction.Apply(actualX, actualW, 1e-6);
        (output * upstream).sum().backward();
        return (reference, expectedX, expectedW, output, actualX, actualW);
    }

    private static (Tensor X, Tensor Weight, Tensor Upstream) Inputs(int width, ScalarType dtype, Generator generator) =>
        ((randn([13, width], generator: generator) * 3).to_type(dtype), (rand([width], generator: generator) + 0.5).to_type(dtype),
            randn([13, width], generator: generator).to_type(dtype));

    /// <summary><see cref="RmsNorm"/>'s libtorch form.</summary>
    private static Tensor Reference(Tensor input, Tensor weight)
    {
        var x = input.to_type(ScalarType.Float32);
        x = x * rsqrt(x.pow(2).mean([-1], keepdim: true) + 1e-6);
        return weight * x.to_type(input.dtype);
    }

    private static void AssertClose(string what, Tensor expected, Tensor actual, double tolerance)
    {
        var (e, a) = (expected.to_type(ScalarType.Float32), actual.to_type(ScalarType.Float32));
        var difference = (e - a).abs().max().item<float>() / e.abs().max().item<float>();
        Assert.True(difference < tolerance, $"{what}: max |Δ| / max |expected| = {difference}");
    }
}
