using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>The CPU selective scan against the recurrence written out with tensor operations, step by step.</summary>
public sealed class SelectiveScanTests
{
    [Theory]
    [InlineData(1, 16, 16, 1)]
    [InlineData(37, 40, 16, 1)]   // channels not a multiple of 16: a partial vector
    [InlineData(100, 96, 8, 3)]   // a state size below 16, three threads
    public void The_scan_equals_the_recurrence(int tokens, int inner, int state, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(11);
        var x = randn([tokens, inner], generator: generator);
        var dt = rand([tokens, inner], generator: generator) * 0.2;
        var b = randn([tokens, state], generator: generator);
        var c = randn([tokens, state], generator: generator);
        var a = -rand([inner, state], generator: generator) * 2;
        var d = randn([inner], generator: generator);
        var h0 = randn([inner, state], generator: generator) * 0.1;

        var h = h0.clone();
        var expected = new List<Tensor>();
        for (var t = 0; t < tokens; t++)
        {
            h = (dt[t].unsqueeze(1) * a).exp() * h + (dt[t] * x[t]).unsqueeze(1) * b[t].unsqueeze(0);
            expected.Add(h.matmul(c[t]) + d * x[t]);
        }

        using var threads = new KernelThreads(threadCount);
        var state1 = h0.clone();
        var actual = SelectiveScan.Forward(x, dt, b, c, a, d, state1, threads);
        Assert.True((actual - stack(expected)).abs().max().item<float>() < 1e-4);
        Assert.True((state1 - h).abs().max().item<float>() < 1e-4);
    }
}
