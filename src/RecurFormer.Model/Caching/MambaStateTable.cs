namespace RecurFormer.Model.Caching;

/// <summary>One sequence's Mamba state per layer, owned: replacing a state frees the old one (any cache kind uses it).</summary>
public sealed class MambaStateTable(int layers) : IDisposable
{
    private readonly MambaState?[] _states = new MambaState?[layers];

    public MambaState? Get(int layer) => _states[layer];

    /// <summary>Takes ownership of <paramref name="state"/> (detached from the caller's dispose scope).</summary>
    public void Set(int layer, MambaState state)
    {
        state.Conv.DetachFromDisposeScope();
        state.Ssm.DetachFromDisposeScope();
        if (!ReferenceEquals(_states[layer], state))
        {
            _states[layer]?.Dispose();
        }
        _states[layer] = state;
    }

    /// <summary>Copies of another table's states (n > 1 choices forked from one prefill).</summary>
    public void CopyFrom(MambaStateTable other)
    {
        for (var layer = 0; layer < _states.Length; layer++)
        {
            if (other._states[layer] is { } state)
            {
                Set(layer, new MambaState(state.Conv.clone(), state.Ssm.clone()));
            }
        }
    }

    public void Dispose()
    {
        foreach (var state in _states)
        {
            state?.Dispose();
        }
        Array.Clear(_states);
    }
}
