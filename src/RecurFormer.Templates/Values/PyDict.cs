namespace RecurFormer.Templates.Values;

/// <summary>
/// A Python dict: keeps insertion order (templates print tool schemas member by member, and json.dumps keeps the
/// order) and compares keys with Python equality, so <c>1</c>, <c>1.0</c> and <c>True</c> are one key.
/// </summary>
public sealed class PyDict
{
    private readonly OrderedDictionary<object, object?> entries = new(PyKeyComparer.Instance);

    public int Count => entries.Count;

    public IEnumerable<KeyValuePair<object, object?>> Entries => entries;

    public IEnumerable<object> Keys => entries.Keys;

    public IEnumerable<object?> Values => entries.Values;

    public object? this[object key]
    {
        set => entries[key] = value;
    }

    public bool TryGet(object? key, out object? value)
    {
        if (key is null || key is Undefined)
        {
            // None is a valid Python key; Undefined is hashable too but never stored by us.
            if (key is null && entries.TryGetValue(NoneKey.Instance, out value))
            {
                return true;
            }
            value = null;
            return false;
        }
        return entries.TryGetValue(key, out value);
    }

    public void Set(object? key, object? value) => entries[key ?? NoneKey.Instance] = value;

    public bool ContainsKey(object? key) => TryGet(key, out _);

    public bool Remove(object? key) => entries.Remove(key ?? NoneKey.Instance);

    public void Clear() => entries.Clear();

    /// <summary>Stands for a None key, which .NET dictionaries cannot hold as null.</summary>
    public sealed class NoneKey
    {
        public static readonly NoneKey Instance = new();
    }
}

/// <summary>Python key equality: numbers by value across int, float and bool; everything else by Python ==.</summary>
internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => PyOps.PyEquals(x is PyDict.NoneKey ? null : x, y is PyDict.NoneKey ? null : y);

    public int GetHashCode(object obj) => obj switch
    {
        string s => s.GetHashCode(StringComparison.Ordinal),
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d when d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => ((long)d).GetHashCode(),
        double d => d.GetHashCode(),
        _ => 0,
    };
}
