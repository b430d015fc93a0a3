using System.Globalization;
using RecurFormer.Model.Checkpoints;
using RecurFormer.Model.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// AdamW with decoupled weight decay (the update of <c>torch.optim.AdamW</c>), preceded by clipping the gradients to a
/// global norm, with the work spread over a team's threads: each parameter belongs to one thread (largest first, to
/// the least loaded), so its update does not depend on how many threads there are.
/// Why: TorchSharp's AdamW and <c>clip_grad_norm_</c> run on the calling thread while the other core waits, and they
/// are memory-bound passes over every trained weight, its gradient and two moments: 10–12 ms of a 170 ms step with two
/// workers on two cores (docs/conversion.md, seventh round). On the CPU each update is one pass (<see cref="AdamWKernel"/>);
/// elsewhere, libtorch's operations.
/// </summary>
internal sealed class TeamAdamW : IDisposable
{
    private readonly Parameter[] _parameters;
    private readonly Tensor?[] _averages;
    private readonly Tensor?[] _squares;
    private readonly int[][] _owned;
    private readonly long[] _steps;                // per parameter, counted when it has a gradient (as torch counts)
    private readonly KernelThreads _threads;
    private readonly double _beta1, _beta2, _epsilon, _weightDecay;

    public TeamAdamW(IReadOnlyList<Parameter> parameters, double learningRate, double beta1, double beta2, double epsilon, double weightDecay,
        KernelThreads threads)
    {
        _parameters = [.. parameters];
        _averages = new Tensor?[_parameters.Length];
        _squares = new Tensor?[_parameters.Length];
        _steps = new long[_parameters.Length];
        (_beta1, _beta2, _epsilon, _weightDecay) = (beta1, beta2, epsilon, weightDecay);
        LearningRate = learningRate;
        _threads = threads;
        var loads = new long[threads.Count];
        var owned = Enumerable.Range(0, threads.Count).Select(_ => new List<int>()).ToArray();
        foreach (var index in Enumerable.Range(0, _parameters.Length).OrderByDescending(i => _parameters[i].numel()).ThenBy(i => i))
        {
            var thread = Array.IndexOf(loads, loads.Min());
            owned[thread].Add(index);
            loads[thread] += _parameters[index].numel();
        }
        _owned = owned.Select(o => o.ToArray()).ToArray();
    }

    public double LearningRate { get; set; }

    /// <summary>Zeroes every gradient there is (a replica's gradients are then added to the master's).</summary>
    public void ZeroGrad() => _threads.Run(thread =>
    {
        using var scope = NewDisposeScope(); // the gradients' wrappers
        foreach (var index in _owned[thread])
        {
            _parameters[index].grad?.zero_();
        }
    });

    /// <summary>
    /// Scales the gradients so that their global 2-norm is at most <paramref name="clipNorm"/> (none when 0, as
    /// <c>clip_grad_norm_</c>), then takes one AdamW step with the current <see cref="LearningRate"/>. Returns false,
    /// having changed nothing, when clipping finds the norm not finite (a NaN or infinite gradient): torch would scale
    /// every gradient by NaN and spoil every weight; skipping the step keeps a long run's weights.
    /// </summary>
    public bool Step(double clipNorm)
    {
        var clip = 1.0;
        if (clipNorm > 0)
        {
            var total = GlobalNorm();
            if (!double.IsFinite(total))
            {
                return false;
            }
            clip = Math.Min(1.0, clipNorm / (total + 1e-6));
        }
        var rate = LearningRate;
        _threads.Run(thread =>
        {
            using var _ = no_grad();
            // Scalars made and freed here: TorchSharp frees an implicit one in its finalizer, which may run while an
            // operation still reads it (docs/runtime.md).
            using Scalar scale = clip, decay = 1 - rate * _weightDecay, beta1 = _beta1, keep1 = 1 - _beta1, beta2 = _beta2, keep2 = 1 - _beta2,
                epsilon = _epsilon;
            foreach (var index in _owned[thread])
            {
                using var scope = NewDisposeScope();
                var parameter = _parameters[index];
                if (parameter.grad is not { } gradient)
                {
                    continue;
                }
                var step = ++_steps[index];
                var correction1 = 1 - Math.Pow(_beta1, step);
                var correction2 = 1 - Math.Pow(_beta2, step);
                var average = _averages[index] ??= zeros_like(parameter).DetachFromDisposeScope();
                var square = _squares[index] ??= zeros_like(parameter).DetachFromDisposeScope();
                if (AdamWKernel.Supports(parameter, gradient, average, square))
                {
                    AdamWKernel.Step(parameter, gradient, average, square, new AdamWKernel.Update((float)clip, (float)(1 - rate * _weightDecay),
                        (float)_beta1, (float)_beta2, (float)Math.Sqrt(correction2), (float)(-rate / correction1), (float)_epsilon));
                    continue;
                }
                if (clip < 1.0)
                {
                    gradient.mul_(scale);
                }
                using Scalar root2 = Math.Sqrt(correction2), stepSize = -rate / correction1;
                parameter.mul_(decay);
                average.mul_(beta1).add_(gradient, alpha: keep1);
                square.mul_(beta2).addcmul_(gradient, gradient, value: keep2);
                var denominator = square.sqrt().div_(root2).add_(epsilon);
                parameter.addcdiv_(average, denominator, value: stepSize);
            }
        });
        return true;
    }

    /// <summary>
    /// The 2-norm of all gradients together: each thread takes its parameters' norms, and one norm of them all in
    /// parameter order gives the same total whatever the threads, read back once (one device synchronisation on a GPU).
    /// </summary>
    private double GlobalNorm()
    {
        var norms = new Tensor?[_parameters.Length];
        try
        {
            _threads.Run(thread =>
            {
                using var scope = NewDisposeScope();
                foreach (var index in _owned[thread])
                {
                    if (_parameters[index].grad is { } gradient)
                    {
                        norms[index] = gradient.norm().to_type(ScalarType.Float32).DetachFromDisposeScope();
                    }
                }
            });
            var present = norms.OfType<Tensor>().ToArray();
            if (present.Length == 0)
            {
                return 0;
            }
            using var stacked = stack(present);
            using var total = stacked.norm();
            return total.item<float>();
        }
        finally
        {
            foreach (var norm in norms)
            {
                norm?.Dispose();
            }
        }
    }

    /// <summary>Each parameter's step count and both moments, for those that have them, as safetensors (for --resume).</summary>
    public void Save(string path)
    {
        var tensors = new Dictionary<string, Tensor>();
        for (var i = 0; i < _parameters.Length; i++)
        {
            if (_averages[i] is { } average && _squares[i] is { } square)
            {
                tensors[$"exp_avg.{i}"] = average;
                tensors[$"exp_avg_sq.{i}"] = square;
            }
        }
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string>
        {
            ["steps"] = string.Join(',', _steps.Select(s => s.ToString(CultureInfo.InvariantCulture))),
            ["parameters"] = _parameters.Length.ToString(CultureInfo.InvariantCulture),
        });
    }

    /// <summary>Restores what <see cref="Save"/> wrote for the same parameter list.</summary>
    public void Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("parameters", out var count) || count != _parameters.Length.ToString(CultureInfo.InvariantCulture))
        {
            throw new InvalidDataException($"{path}: optimiser state for {count ?? "?"} parameters, this stage trains {_parameters.Length}");
        }
        var steps = file.Metadata["steps"].Split(',').Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        for (var i = 0; i < _parameters.Length; i++)
        {
            var shape = _parameters[i].shape;
            if (file.Contains($"exp_avg.{i}") && !(file.Tensors[$"exp_avg.{i}"].Shape.SequenceEqual(shape) && file.Tensors[$"exp_avg_sq.{i}"].Shape.SequenceEqual(shape)))
            {
                throw new InvalidDataException($"{path}: the moments of parameter {i} are not of its shape [{string.Join(", ", shape)}]");
            }
        }
        for (var i = 0; i < _parameters.Length; i++)
        {
            _averages[i]?.Dispose();
            _squares[i]?.Dispose();
            (_averages[i], _squares[i]) = (null, null);
            _steps[i] = steps[i];
            if (file.Contains($"exp_avg.{i}"))
            {
                var device = _parameters[i].device;
                _averages[i] = file.Load($"exp_avg.{i}", _parameters[i].dtype, device).DetachFromDisposeScope();
                _squares[i] = file.Load($"exp_avg_sq.{i}", _parameters[i].dtype, device).DetachFromDisposeScope();
            }
        }
    }

    public void Dispose()
    {
        foreach (var tensor in _averages.Concat(_squares))
        {
            tensor?.Dispose();
        }
    }
}
