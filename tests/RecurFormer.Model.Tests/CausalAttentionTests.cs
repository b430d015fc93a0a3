using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The training attention kernels against libtorch's scaled_dot_product_attention (causal, or masked to sinks + window), forward and backward.</summary>
public sealed class CausalAttentionTests
{
    /// <summary>
    /// float32: the output and ∂q, ∂k, ∂v within 1e-5 of the largest value. A length that is not a multiple of 16 ends
    /// in a part-filled vector of keys; a head size of 40 takes a scalar tail of 8; one group of 2 threads has none.
    /// </summary>
    [Theory]
    [InlineData(37, 8, 4, 48, 1)]
    [InlineData(128, 6, 3, 40, 2)]
    [InlineData(16, 2, 1, 16, 2)]
    public void The_kernels_equal_libtorch_in_float32(int tokens, int heads, int groups, int headDim, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(61);
        var (expected, actual) = Both(tokens, heads, groups, headDim, ScalarType.Float32, threadCount, generator);
        for (var i = 0; i < 4; i++)
        {
            AssertClose(new[] { "o", "∂q", "∂k", "∂v" }[i], expected[i], actual[i], 1e-5);
        }
    }

    /// <summary>
    /// Sinks + a recent window (query i sees j ≤ i with j &lt; sinks or j > i − size), float32, against libtorch with the
    /// same boolean mask: the default model's 27 + 1 past several vectors of keys (its sink run and recent run apart); four
    /// sinks whose vector the window reaches (one run, keys in between masked); no sinks; a window longer than the sequence.
    /// </summary>
    [Theory]
    [InlineData(100, 4, 2, 48, 27, 1, 2)]
    [InlineData(70, 8, 4, 48, 8, 4, 1)]
    [InlineData(53, 4, 2, 40, 20, 0, 2)]
    [InlineData(30, 4, 2, 16, 64, 2, 1)]
    public void Windowed_kernels_equal_libtorch_in_float32(int tokens, int heads, int groups, int headDim, int size, int sinks, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(71);
        var (expected, actual) = Both(tokens, heads, groups, headDim, ScalarType.Float32, threadCount, generator, new WindowSpec(size, sinks));
        for (var i = 0; i < 4; i++)
        {
            AssertClose(new[] { "o", "∂q", "∂k", "∂v" }[i], expected[i], actual[i], 1e-5);
        }
    }

    /// <summary>bfloat16 in and out, computed in float32 (as libtorch's flash path computes it): within bfloat16's rounding.</summary>
    [Fact]
    public void The_kernels_equal_libtorch_in_bfloat16()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(67);
        var (expected, actual) = Both(40, 8, 4, 48, ScalarType.BFloat16, 1, generator);
        Assert.All(actual, t => Assert.Equal(ScalarType.BFloat16, t.dtype));
        for (var i = 0; i < 4; i++)
        {
            AssertClose(new[] { "o", "∂q", "∂k", "∂v" }[i], expected[i], actual[i], 1.6e-2);
        }
    }

    [Fact]
    public void Mismatched_shapes_are_refused()
    {
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => CausalAttentionFunction.Apply(zeros(4, 6, 8), zeros(4, 4, 8), zeros(4, 4, 8), KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => CausalAttentionFunction.Apply(zeros(4, 6, 8), zeros(5, 3, 8), zeros(5, 3, 8), KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => CausalAttentionFunction.Apply(zeros(4, 6, 8), zeros(4, 3, 8), zeros(4, 3, 16), KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => CausalAttentionFunction.Apply(zeros(4, 6, 8), zeros(4, 3, 8), zeros(4, 3, 8), KernelThreads.Single, new WindowSpec(0, 4)));
    }

    /// <summary>[o, ∂q, ∂k, ∂v] of libtorch (float32, keys repeated per head) and of the kernels, under one upstream gradient.</summary>
    private static (Tensor[] Expected, Tensor[] Actual) Both(int tokens, int heads, int groups, int headDim, ScalarType dtype, int threadCount, Generator generator,
        WindowSpec? window = null)
    {
        var q = (randn([tokens, heads, headDim], generator: generator) * 2).to_type(dtype);
        var k = (randn([tokens, groups, headDim], generator: generator) * 2).to_type(dtype);
        var v = randn([tokens, groups, headDim], generator: generator).to_type(dtype);
        var upstream = randn([tokens, heads, headDim], generator: generator).to_type(dtype);

        var (eq, ek, ev) = (Leaf(q.to_type(ScalarType.Float32)), Leaf(k.to_type(ScalarType.Float32)), Leaf(v.to_type(ScalarType.Float32)));
        var repeat = heads / groups;
        var (qt, kt, vt) = (eq.transpose(0, 1), ek.transpose(0, 1).repeat_interleave(repeat, 0), ev.transpose(0, 1).repeat_interleave(repeat, 0));
        var reference = (window is null
            ? nn.functional.scaled_dot_product_attention(qt, kt, vt, is_casual: true)
            : nn.functional.scaled_dot_product_attention(qt, kt, vt, WindowMask(tokens, window))).transpose(0, 1);
        (reference * upstream.to_type(ScalarType.Float32)).sum().backward();

        var (aq, ak, av) = (Leaf(q), Leaf(k), Leaf(v));
        using var threads = new KernelThreads(threadCount);
        var output = CausalAttentionFunction.Apply(aq, ak, av, threads, window);
        (output * upstream).sum().backward();
        return ([reference, eq.grad!, ek.grad!, ev.grad!], [output, aq.grad!, ak.grad!, av.grad!]);
    }

    /// <summary>[tokens, tokens]: true where query i sees key j, written out element by element.</summary>
    private static Tensor WindowMask(int tokens, WindowSpec window)
    {
        var allowed = new bool[tokens * tokens];
        for (var i = 0; i < tokens; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                allowed[i * tokens + j] = j < window.Sinks || j > i - window.Size;
            }
        }
        return tensor(allowed).view(tokens, tokens);
    }

    private static Tensor Leaf(Tensor t) => t.detach().clone().requires_grad_(true);

    private static void AssertClose(string what, Tensor expected, Tensor actual, double tolerance)
    {
        var (e, a) = (expected.to_type(ScalarType.Float32), actual.to_type(ScalarType.Float32));
        var difference = (e - a).abs().max().item<float>() / e.abs().max().item<float>();
        Assert.True(difference < tolerance, $"{what}: max |Δ| / max |expected| = {difference}");
    }
}
