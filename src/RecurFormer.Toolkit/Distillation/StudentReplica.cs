using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// A copy of the student that runs forward and backward in place of the float32 master weights, which AdamW updates
/// and checkpoints save. Two uses: mixed precision, as on GPUs (stage 2 through a bfloat16 copy: oneDNN's bfloat16
/// products take half the time of float32 ones on a CPU with bfloat16 instructions), and data parallelism (each
/// worker of a <see cref="DistillTeam"/> runs its own copy). Before each step the trained parameters are copied in
/// (rounded to the copy's dtype); after it their gradients are added to the master's (widened). The Mamba state,
/// convolution and scan stay float32 in a bfloat16 copy too.
/// </summary>
internal sealed class StudentReplica : IDisposable
{
    private readonly (Parameter Master, Parameter Copy)[] _trained;
    private readonly long[] _sizes;          // elements of each trained parameter
    private readonly int[] _largestFirst;    // their indices, largest first (a stable order: the same split every time)

    /// <param name="folder">A checkpoint of the student's architecture (its weights are replaced by the master's).</param>
    public StudentReplica(ICausalLM master, string folder, ComputeTarget target, IReadOnlyList<Parameter> trained)
    {
        Model = CausalLMLoader.FromPretrained(folder, target);
        // Same model class, same state-dict names: parameters pair up name for name.
        var copies = ((nn.Module)Model).named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var pairs = new List<(Parameter, Parameter)>();
        var trainedSet = trained.ToHashSet(ReferenceEqualityComparer.Instance);
        using (no_grad())
        {
            foreach (var (name, parameter) in ((nn.Module)master).named_parameters())
            {
                var copy = copies[name];
                copy.copy_(parameter);
                copy.requires_grad = trainedSet.Contains(parameter);
                if (copy.requires_grad)
                {
                    pairs.Add((parameter, copy));
                }
            }
        }
        _trained = [.. pairs];
        _sizes = [.. _trained.Select(p => p.Master.numel())];
        _largestFirst = [.. Enumerable.Range(0, _trained.Length).OrderByDescending(i => _sizes[i])];
        if (_trained.Length != trainedSet.Count)
        {
            throw new InvalidOperationException($"{trainedSet.Count - _trained.Length} trained parameters are not parameters of the student");
        }
    }

    /// <summary>The copy that runs forward and backward.</summary>
    public ICausalLM Model { get; }

    /// <summary>The trained parameters' current master values into the copy.</summary>
    public void PullWeights()
    {
        using var _ = no_grad();
        foreach (var (master, copy) in _trained)
        {
            copy.copy_(master);
        }
    }

    /// <summary>
    /// The copy's gradients (of one step) added to the master parameters', widened, for <paramref name="part"/> of
    /// <paramref name="parts"/> of the parameters (parts of about equal size, the same split every time); the copy's
    /// are cleared. Threads push their parts at once; replicas add in a fixed order, so each parameter's sum does not
    /// depend on which worker finished first.
    /// </summary>
    public void PushGradients(int part, int parts)
    {
        using var _ = no_grad();
        // The gradient wrappers and the widened temporaries are freed here, not when a finalizer gets to them.
        using var scope = NewDisposeScope();
        var owners = Owners(parts);
        for (var i = 0; i < _trained.Length; i++)
        {
            var (master, copy) = _trained[i];
            if (owners[i] != part)
            {
                continue;
            }
            if (copy.grad is { } gradient)
            {
                if (master.grad is { } sum)
                {
                    sum.add_(gradient.to_type(master.dtype));
                }
                else
                {
                    master.grad = gradient.to_type(master.dtype); // the parameter keeps its own reference
                }
                copy.grad = null;
            }
        }
    }

    /// <summary>Which part each trained parameter belongs to when split in <paramref name="parts"/>: largest first, each to the smallest part so far.</summary>
    private int[] Owners(int parts)
    {
        var owners = new int[_trained.Length];
        var sizes = new long[parts];
        foreach (var i in _largestFirst)
        {
            var smallest = Array.IndexOf(sizes, sizes.Min());
            owners[i] = smallest;
            sizes[smallest] += _sizes[i];
        }
        return owners;
    }

    public void ClearGradients()
    {
        foreach (var (_, copy) in _trained)
        {
            copy.grad = null;
        }
    }

    public void Dispose() => Model.Dispose();
}
