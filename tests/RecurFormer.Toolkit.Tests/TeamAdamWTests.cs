using RecurFormer.Model.Kernels;
using RecurFormer.Toolkit.Distillation;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

/// <summary>The optimiser distill runs on its workers' threads, against TorchSharp's AdamW and clip_grad_norm_.</summary>
public sealed class TeamAdamWTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public TeamAdamWTests() => TestData.EnsureTorch();

    public void Dispose() => _temp.Dispose();

    private static readonly long[][] Shapes = [[24, 8], [8], [5, 1, 4], [3], [16, 16], [7]];

    /// <summary>The parameter whose first gradient comes late (step <see cref="LateStart"/>), and the one that never gets one.</summary>
    private const int Late = 3, Never = 5, LateStart = 3;

    /// <summary>Parameters and, per step, gradients (null: none for that parameter at that step).</summary>
    /// <param name="dtype">float32 takes the one-pass CPU kernel (<see cref="AdamWKernel"/>), float64 libtorch's operations (as on a GPU).</param>
    private static (Parameter[] Parameters, Tensor?[][] Gradients) Problem(int steps, ScalarType dtype = ScalarType.Float32)
    {
        using var generator = new Generator(11);
        var parameters = Shapes.Select(s => new Parameter(randn(s, generator: generator).to_type(dtype))).ToArray();
        // Large gradients in odd steps, so that clipping scales some steps and leaves others.
        var gradients = Enumerable.Range(0, steps).Select(step => Shapes.Select((s, i) =>
            i == Never || (i == Late && step < LateStart) ? null : (randn(s, generator: generator) * (step % 2 == 1 ? 3.0 : 0.02)).to_type(dtype)).ToArray()).ToArray();
        return (parameters, gradients);
    }

    private static void SetGradients(Parameter[] parameters, Tensor?[] gradients)
    {
        for (var i = 0; i < gradients.Length; i++)
        {
            if (gradients[i] is { } gradient)
            {
                parameters[i].grad = gradient.clone();
            }
        }
    }

    /// <summary>
    /// Six steps with a learning-rate schedule, weight decay, an eps large enough that its place in the update counts,
    /// clipped and unclipped steps, a parameter whose first gradient comes at step 3 (its bias correction starts
    /// there, as torch counts steps per parameter) and one that never gets one (untouched). The shapes give the CPU
    /// kernel whole vectors, a vector and a tail, and tails alone.
    /// </summary>
    [Theory]
    [InlineData(1, ScalarType.Float32)]
    [InlineData(2, ScalarType.Float32)]
    [InlineData(3, ScalarType.Float32)]
    [InlineData(2, ScalarType.Float64)]
    public void Its_steps_are_torchs_clipped_adamw_whatever_the_threads(int threadCount, ScalarType dtype)
    {
        const int steps = 6;
        var (expected, gradients) = Problem(steps, dtype);
        var (actual, _) = Problem(steps, dtype);
        using var reference = optim.AdamW(expected, 0.01, 0.9, 0.99, 1e-3, 0.1);
        using var threads = new KernelThreads(threadCount);
        using var optimizer = new TeamAdamW(actual, 0.01, 0.9, 0.99, 1e-3, 0.1, threads);
        var clipped = 0;
        for (var step = 0; step < steps; step++)
        {
            var rate = 0.01 * (step + 1) / steps;                                    // a schedule, as distill's
            foreach (var group in reference.ParamGroups)
            {
                group.LearningRate = rate;
            }
            optimizer.LearningRate = rate;
            SetGradients(expected, gradients[step]);
            SetGradients(actual, gradients[step]);
            var norm = nn.utils.clip_grad_norm_(expected, 1.0);
            clipped += norm > 1.0 ? 1 : 0;
            reference.step();
            Assert.True(optimizer.Step(1.0));
        }
        Assert.InRange(clipped, 1, steps - 1);
        for (var i = 0; i < expected.Length; i++)
        {
            var difference = (expected[i] - actual[i]).abs().max().to_type(ScalarType.Float32).item<float>();
            Assert.True(difference < 1e-6, $"parameter {i}: max |Δ| = {difference}");
        }
        using var untouched = Problem(0, dtype).Parameters[Never];
        Assert.True(untouched.allclose(actual[Never], rtol: 0, atol: 0));

        optimizer.ZeroGrad();
        Assert.All(actual.Where((_, i) => i != Never), p => Assert.Equal(0f, p.grad!.abs().max().to_type(ScalarType.Float32).item<float>()));
        Assert.Null(actual[Never].grad);
    }

    /// <summary>A NaN gradient: the step is refused and changes nothing (torch would turn every weight into NaN).</summary>
    [Fact]
    public void A_step_whose_gradients_are_not_finite_changes_nothing()
    {
        var (parameters, gradients) = Problem(2);
        using var optimizer = new TeamAdamW(parameters, 0.01, 0.9, 0.99, 1e-8, 0, KernelThreads.Single);
        SetGradients(parameters, gradients[0]);
        Assert.True(optimizer.Step(1.0));
        var before = parameters.Select(p => p.data<float>().ToArray()).ToArray();
        SetGradients(parameters, gradients[1]);
        parameters[0].grad![0, 0] = float.NaN;
        Assert.False(optimizer.Step(1.0));
        for (var i = 0; i < parameters.Length; i++)
        {
            Assert.Equal(before[i], parameters[i].data<float>().ToArray());
        }
    }

    [Fact]
    public void A_saved_state_resumes_the_same_steps()
    {
        const int steps = 5;
        var (straight, gradients) = Problem(steps);
        var (resumed, _) = Problem(steps);
        using var threads = new KernelThreads(2);
        using (var optimizer = new TeamAdamW(straight, 0.01, 0.9, 0.99, 1e-8, 0, threads))
        {
            for (var step = 0; step < steps; step++)
            {
                SetGradients(straight, gradients[step]);
                optimizer.Step(1.0);
            }
        }
        // Saved after step 3 of 5: the late parameter has taken one step, the other ones three.
        var path = Path.Combine(_temp.Path, "optimizer.safetensors");
        using (var first = new TeamAdamW(resumed, 0.01, 0.9, 0.99, 1e-8, 0, threads))
        {
            for (var step = 0; step < LateStart + 1; step++)
            {
                SetGradients(resumed, gradients[step]);
                first.Step(1.0);
            }
            first.Save(path);
        }
        using (var second = new TeamAdamW(resumed, 0.01, 0.9, 0.99, 1e-8, 0, KernelThreads.Single))
        {
            second.Load(path);
            for (var step = LateStart + 1; step < steps; step++)
            {
                SetGradients(resumed, gradients[step]);
                second.Step(1.0);
            }
        }
        for (var i = 0; i < straight.Length; i++)
        {
            Assert.Equal(straight[i].data<float>().ToArray(), resumed[i].data<float>().ToArray());
        }
        using var fewer = new TeamAdamW(resumed.Take(2).ToArray(), 0.01, 0.9, 0.99, 1e-8, 0, threads);
        Assert.Throws<InvalidDataException>(() => fewer.Load(path));
        var reshaped = resumed.Select(p => new Parameter(zeros(p.shape[0] == 24 ? [8, 24] : p.shape))).ToArray();
        using var other = new TeamAdamW(reshaped, 0.01, 0.9, 0.99, 1e-8, 0, threads);
        Assert.Throws<InvalidDataException>(() => other.Load(path));
    }
}
