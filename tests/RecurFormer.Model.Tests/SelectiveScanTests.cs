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

    /// <summary>
    /// The training scan (forward and backward kernels as one autograd node) against autograd through the recurrence
    /// written with tensor operations: the outputs and the gradients of every input agree within 1e-4 (relative to the
    /// largest value of each, where that exceeds 1).
    /// </summary>
    [Theory]
    [InlineData(1, 1, 16, 16, 1, false)]
    [InlineData(3, 37, 40, 16, 1, false)]  // three sequences, a partial vector of channels
    [InlineData(2, 64, 96, 8, 3, false)]   // a state size below 16, three threads
    [InlineData(1, 50, 48, 16, 2, true)]   // continuing from a state
    public void The_training_scan_and_its_gradients_equal_autograd_through_the_recurrence(int sequences, int tokens, int inner, int state, int threadCount, bool fromState)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(17);
        var total = sequences * tokens;
        var inputs = new[]
        {
            randn([total, inner], generator: generator),                 // x
            rand([total, inner], generator: generator) * 0.2 + 0.01,     // Δ
            randn([total, state], generator: generator),                 // B
            randn([total, state], generator: generator),                 // C
            -rand([inner, state], generator: generator) * 2 - 0.05,      // A
            randn([inner], generator: generator),                        // D
        };
        var h0 = fromState ? randn([inner, state], generator: generator) * 0.1 : null;
        var upstream = randn([total, inner], generator: generator);

        var expected = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var (x, dt, b, c, a, d) = (expected[0], expected[1], expected[2], expected[3], expected[4], expected[5]);
        var outputs = new List<Tensor>();
        for (var s = 0; s < sequences; s++)
        {
            var h = h0?.clone() ?? zeros(inner, state);
            for (var t = s * tokens; t < (s + 1) * tokens; t++)
            {
                h = (dt[t].unsqueeze(1) * a).exp() * h + (dt[t] * x[t]).unsqueeze(1) * b[t].unsqueeze(0);
                outputs.Add(h.matmul(c[t]) + d * x[t]);
            }
        }
        var reference = stack(outputs);
        (reference * upstream).sum().backward();

        using var threads = new KernelThreads(threadCount);
        var actualInputs = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var final = fromState ? zeros(inner, state) : null;
        var actual = SelectiveScanFunction.Apply(actualInputs[0], actualInputs[1], actualInputs[2], actualInputs[3], actualInputs[4], actualInputs[5],
            sequences, h0, final, threads);
        (actual * upstream).sum().backward();

        AssertClose("y", reference, actual);
        string[] names = ["x", "Δ", "B", "C", "A", "D"];
        for (var i = 0; i < names.Length; i++)
        {
            AssertClose($"∂{names[i]}", expected[i].grad!, actualInputs[i].grad!);
        }
    }

    /// <summary>
    /// The tensor-operation scan that CUDA training uses (<see cref="Layers.TensorScan"/>) against the CPU training
    /// scan: outputs (with D·x added) and the gradients of every input within 1e-4, several sequences at once.
    /// </summary>
    [Theory]
    [InlineData(1, 1, 16, 16)]
    [InlineData(3, 37, 40, 16)]
    [InlineData(2, 64, 96, 8)]
    public void The_tensor_scan_and_its_gradients_equal_the_training_scan(int sequences, int tokens, int inner, int state)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(23);
        var total = sequences * tokens;
        var inputs = new[]
        {
            randn([total, inner], generator: generator),
            rand([total, inner], generator: generator) * 0.2 + 0.01,
            randn([total, state], generator: generator),
            randn([total, state], generator: generator),
            -rand([inner, state], generator: generator) * 2 - 0.05,
            randn([inner], generator: generator),
        };
        var upstream = randn([total, inner], generator: generator);

        var kernel = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var expected = SelectiveScanFunction.Apply(kernel[0], kernel[1], kernel[2], kernel[3], kernel[4], kernel[5], sequences);
        (expected * upstream).sum().backward();

        var ops = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var (x, dt) = (ops[0].view(sequences, tokens, inner), ops[1].view(sequences, tokens, inner));
        var (y, last) = Layers.TensorScan.Run(x, dt, ops[2].view(sequences, tokens, state), ops[3].view(sequences, tokens, state), ops[4]);
        var actual = (y + x * ops[5]).reshape(total, inner);
        (actual * upstream).sum().backward();

        AssertClose("y", expected, actual);
        Assert.Equal([sequences, inner, state], last.shape);
        string[] names = ["x", "Δ", "B", "C", "A", "D"];
        for (var i = 0; i < names.Length; i++)
        {
            // One token from a zero state: the decay never multiplies anything, so A gets no gradient (zero).
            AssertClose($"∂{names[i]}", kernel[i].grad!, ops[i].grad ?? zeros_like(ops[i]));
        }
    }

    /// <summary>
    /// The fused training scan (softplus on Δ's way in, y · SiLU(gate) out, inside the kernels) against the plain
    /// training scan with those two written as libtorch operations around it: outputs and the gradients of all seven
    /// inputs (Δ before its softplus, and the gate) within 1e-4. Raw Δ spans both sides of zero and the linear range.
    /// </summary>
    [Theory]
    [InlineData(1, 1, 16, 16, 1)]
    [InlineData(3, 37, 40, 16, 1)]   // three sequences, a partial vector of channels
    [InlineData(2, 64, 96, 8, 3)]    // a state size below 16, three threads
    [InlineData(3, 37, 40, 16, 3)]   // a partial vector, three threads
    public void The_fused_training_scan_equals_softplus_scan_and_gate_as_separate_operations(int sequences, int tokens, int inner, int state, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(29);
        var total = sequences * tokens;
        var inputs = new[]
        {
            randn([total, inner], generator: generator),                 // x
            randn([total, inner], generator: generator) * 3 - 2,         // Δ before softplus
            randn([total, state], generator: generator),                 // B
            randn([total, state], generator: generator),                 // C
            -rand([inner, state], generator: generator) * 2 - 0.05,      // A
            randn([inner], generator: generator),                        // D
            randn([total, 2 * inner], generator: generator) * 2,         // z | gate: the gate is the strided second half, as of in_proj's output
        };
        static Tensor Gate(Tensor projected) => projected.narrow(1, projected.shape[1] / 2, projected.shape[1] / 2);
        var upstream = randn([total, inner], generator: generator);
        using var threads = new KernelThreads(threadCount);

        var plain = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var expected = SelectiveScanFunction.Apply(plain[0], nn.functional.softplus(plain[1]), plain[2], plain[3], plain[4], plain[5], sequences, threads: threads)
            * nn.functional.silu(Gate(plain[6]));
        (expected * upstream).sum().backward();

        var fused = inputs.Select(t => t.clone().requires_grad_(true)).ToArray();
        var actual = SelectiveScanFunction.ApplyFused(fused[0], fused[1], fused[2], fused[3], fused[4], fused[5], Gate(fused[6]), sequences, threads);
        (actual * upstream).sum().backward();

        AssertClose("y", expected, actual);
        string[] names = ["x", "Δ (raw)", "B", "C", "A", "D", "gate"];
        for (var i = 0; i < names.Length; i++)
        {
            AssertClose($"∂{names[i]}", plain[i].grad ?? zeros_like(plain[i]), fused[i].grad ?? zeros_like(fused[i]));
        }
    }

    internal static void AssertClose(string what, Tensor expected, Tensor actual)
    {
        var scale = Math.Max(1f, expected.abs().max().item<float>());
        var difference = (expected - actual).abs().max().item<float>() / scale;
        Assert.True(difference < 1e-4, $"{what}: max |Δ| / scale = {difference}");
    }
}
