using System.Diagnostics;
using System.Numerics;
using RecurFormer.StructuredOutput.Grammars;

namespace RecurFormer.StructuredOutput.Matching;

/// <summary>
/// Runs a <see cref="Grammar"/> over a <see cref="TokenVocabulary"/>. A parse state is the set of configurations
/// (automaton state, call stack) reachable after the output so far; it is determinised lazily: every distinct set
/// gets an id, its byte transitions are computed once and remembered, and so is its token mask (one trie walk).
/// A decode step is then a mask copy and a few cached transitions. Stacks are hash-consed, so a set is a sorted
/// array of (state, stack id) pairs. Shared by every request with the same grammar; thread-safe (one lock: the
/// engine thread is the only caller in steady state).
/// </summary>
public sealed class GrammarMatcher
{
    /// <summary>Deepest nesting (rule calls on the stack) a parse may reach; deeper continuations are not allowed.</summary>
    public const int MaxDepth = 96;

    /// <summary>Most distinct parse states one grammar may create (a bound on memory for pathological grammars).</summary>
    public const int MaxSets = 250_000;

    private const int Unknown = -2;
    private const int Dead = -1;

    private readonly object _lock = new();
    private readonly Grammar _grammar;
    private readonly TokenVocabulary _vocabulary;
    private readonly int _maskWords;

    // Hash-consed stacks: id 0 is the empty stack.
    private readonly List<(int Return, int Parent, int Depth, int Cost)> _stacks = [(0, 0, 0, 0)];
    private readonly Dictionary<(int, int), int> _stackIds = [];

    private readonly List<ParseSet> _sets = [];
    private readonly Dictionary<SetKey, int> _setIds = [];

    public GrammarMatcher(Grammar grammar, TokenVocabulary vocabulary)
    {
        _grammar = grammar;
        _vocabulary = vocabulary;
        _maskWords = (vocabulary.Size + 63) / 64;
        lock (_lock)
        {
            Initial = Closure([Pack(grammar.RuleStart[0], 0)]);
        }
        if (Initial == Dead)
        {
            throw new StructuredOutputException("the grammar admits no output");
        }
    }

    public Grammar Grammar => _grammar;

    public TokenVocabulary Vocabulary => _vocabulary;

    /// <summary>The parse state before any output.</summary>
    public int Initial { get; }

    /// <summary>Parse states created so far (for benchmarks and tests).</summary>
    public int StateCount
    {
        get
        {
            lock (_lock)
            {
                return _sets.Count;
            }
        }
    }

    /// <summary>The output so far is complete.</summary>
    public bool IsAccepting(int state) => _sets[state].Accepting;

    /// <summary>Some byte or special token may still follow.</summary>
    public bool CanContinue(int state) => !_sets[state].First.IsEmpty || _sets[state].HasTokenEdges;

    /// <summary>Fewest further bytes (special tokens count one) that complete the output from this state.</summary>
    public int MinBytesToEnd(int state) => _sets[state].MinBytes;

    /// <summary>The state after <paramref name="token"/>, or -1 when the grammar does not allow it here.</summary>
    public int Advance(int state, int token)
    {
        lock (_lock)
        {
            if (_vocabulary.Bytes(token) is { } bytes)
            {
                foreach (var b in bytes)
                {
                    state = Step(state, b);
                    if (state == Dead)
                    {
                        return Dead;
                    }
                }
                return state;
            }
            return TokenStep(state, token);
        }
    }

    /// <summary>Advances by raw bytes (tests, and checking a forced prefix); -1 when not allowed.</summary>
    public int AdvanceBytes(int state, ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            foreach (var b in bytes)
            {
                state = Step(state, b);
                if (state == Dead)
                {
                    return Dead;
                }
            }
            return state;
        }
    }

    /// <summary>
    /// The tokens allowed in <paramref name="state"/> (bit t of word t/64) such that the output can still be completed
    /// within <paramref name="tokensAfter"/> more tokens; the array is cached and must not be written.
    /// </summary>
    public ulong[] Allowed(int state, int tokensAfter)
    {
        lock (_lock)
        {
            var set = _sets[state];
            var full = set.Mask ??= Walk(state, int.MaxValue, out set.MaxNextMinBytes, out set.MinNextMinBytes);
            if (tokensAfter >= set.MaxNextMinBytes)
            {
                return full;
            }
            // Close to the token budget: only tokens after which the shortest completion still fits. Single-byte tokens
            // exist for every byte in byte-level vocabularies, so a completion of k bytes fits in k tokens.
            set.Budgeted ??= [];
            if (!set.Budgeted.TryGetValue(tokensAfter, out var budgeted))
            {
                budgeted = Walk(state, tokensAfter, out _, out _);
                if (!set.Accepting && budgeted.All(w => w == 0))
                {
                    // Nothing is sure to fit (the budget was short, or the model spelled forced text a byte per token):
                    // allow the tokens that bring the end closest, so that the output closes as soon as it can. An
                    // accepting state needs no token: end of sequence is allowed there.
                    budgeted = Walk(state, set.MinNextMinBytes, out _, out _);
                }
                set.Budgeted[tokensAfter] = budgeted;
            }
            return budgeted;
        }
    }

    /// <summary>
    /// Computes masks ahead of use, breadth-first over the states tokens lead to from the start, until every reachable
    /// state has one or <paramref name="budget"/> is spent; returns how many states it prepared. Called on the request
    /// thread right after compiling, so that the engine thread, which would otherwise compute each mask when a decode
    /// step first needs it, mostly finds them ready. The lock is taken per state: the engine waits at most one trie walk.
    /// </summary>
    public int Warm(TimeSpan budget)
    {
        var clock = Stopwatch.StartNew();
        var queue = new Queue<int>([Initial]);
        var seen = new HashSet<int> { Initial };
        var prepared = 0;
        while (queue.Count > 0 && clock.Elapsed < budget)
        {
            var state = queue.Dequeue();
            int[] successors;
            lock (_lock)
            {
                Allowed(state, int.MaxValue);
                successors = _sets[state].Successors ?? [];
            }
            prepared++;
            foreach (var next in successors)
            {
                if (seen.Add(next))
                {
                    queue.Enqueue(next);
                }
            }
        }
        return prepared;
    }

    /// <summary>How many tokens <see cref="Allowed"/> allows (tests and benchmarks).</summary>
    public int CountAllowed(int state) => Allowed(state, int.MaxValue).Sum(w => BitOperations.PopCount(w));

    /// <summary>
    /// The trie walk: every token whose bytes the grammar accepts from <paramref name="state"/> (and after which the
    /// output can close within <paramref name="limit"/> bytes). Inside a string most bytes lead back to the same state;
    /// tokens made only of such bytes are taken from a precomputed mask for that byte class, and the walk starts only
    /// where a token leaves the class (a quote, an escape, a multi-byte character).
    /// </summary>
    private ulong[] Walk(int state, int limit, out int maxNextMinBytes, out int minNextMinBytes)
    {
        var successors = new HashSet<int>();
        var mask = new ulong[_maskWords];
        var maxMin = 0;
        var minMin = int.MaxValue;
        var v = _vocabulary;
        var work = new Stack<(int Node, int State)>();
        var set = _sets[state];
        set.SelfLoop ??= SelfLoopBytes(state);
        if (set.SelfLoop.Value.Count >= 32)
        {
            var pure = PureTokens(set.SelfLoop.Value.Bytes);
            if (set.MinBytes <= limit && pure.Any)
            {
                pure.Mask.AsSpan().CopyTo(mask);
                maxMin = minMin = set.MinBytes;
                successors.Add(state);
            }
            foreach (var edge in pure.Exits)
            {
                var next = Step(state, v.EdgeByte[edge]);
                if (next != Dead)
                {
                    Visit(v.EdgeChild[edge], next);
                }
            }
        }
        else
        {
            work.Push((0, state));
        }
        while (work.Count > 0)
        {
            var (node, at) = work.Pop();
            var transitions = _sets[at].Next;
            for (var e = v.ChildStart[node]; e < v.ChildStart[node + 1]; e++)
            {
                var b = v.EdgeByte[e];
                var next = transitions[b];
                if (next == Unknown)
                {
                    next = Step(at, b);
                }
                if (next != Dead)
                {
                    Visit(v.EdgeChild[e], next);
                }
            }
        }
        if (set.HasTokenEdges)
        {
            foreach (var token in _grammar.SpecialTokens)
            {
                var next = TokenStep(state, token);
                if (next != Dead && (uint)token < (uint)v.Size && _sets[next].MinBytes <= limit)
                {
                    successors.Add(next);
                    maxMin = Math.Max(maxMin, _sets[next].MinBytes);
                    minMin = Math.Min(minMin, _sets[next].MinBytes);
                    mask[token >> 6] |= 1UL << (token & 63);
                }
            }
        }
        maxNextMinBytes = maxMin;
        minNextMinBytes = minMin;
        if (limit == int.MaxValue)
        {
            set.Successors = [.. successors];
        }
        return mask;

        // A trie node reached in parse state `next`: its tokens are allowed (if the rest still fits), its children are next.
        void Visit(int child, int next)
        {
            var minBytes = _sets[next].MinBytes;
            if (v.TokenStart[child] < v.TokenStart[child + 1] && minBytes <= limit)
            {
                successors.Add(next);
                maxMin = Math.Max(maxMin, minBytes);
                minMin = Math.Min(minMin, minBytes);
                for (var t = v.TokenStart[child]; t < v.TokenStart[child + 1]; t++)
                {
                    var id = v.TokenIds[t];
                    mask[id >> 6] |= 1UL << (id & 63);
                }
            }
            if (v.ChildStart[child] < v.ChildStart[child + 1])
            {
                work.Push((child, next));
            }
        }
    }

    /// <summary>The bytes after which the parse is in the same state again (the plain characters of a string).</summary>
    private (ByteSet Bytes, int Count) SelfLoopBytes(int state)
    {
        var bytes = default(ByteSet);
        var count = 0;
        var first = _sets[state].First;
        for (var b = 0; b < 256; b++)
        {
            if (first.Contains(b) && Step(state, (byte)b) == state)
            {
                bytes = bytes.Union(ByteSet.Of((byte)b));
                count++;
            }
        }
        return (bytes, count);
    }

    private readonly Dictionary<ByteSet, PureIndex> _pure = [];

    /// <summary>For a byte class: the tokens made only of its bytes, and the trie edges where a token first leaves it.</summary>
    private PureIndex PureTokens(ByteSet bytes)
    {
        if (_pure.TryGetValue(bytes, out var index))
        {
            return index;
        }
        var v = _vocabulary;
        var mask = new ulong[_maskWords];
        var exits = new List<int>();
        var any = false;
        var work = new Stack<int>();
        work.Push(0);
        while (work.Count > 0)
        {
            var node = work.Pop();
            for (var e = v.ChildStart[node]; e < v.ChildStart[node + 1]; e++)
            {
                if (!bytes.Contains(v.EdgeByte[e]))
                {
                    exits.Add(e);
                    continue;
                }
                var child = v.EdgeChild[e];
                for (var t = v.TokenStart[child]; t < v.TokenStart[child + 1]; t++)
                {
                    var id = v.TokenIds[t];
                    mask[id >> 6] |= 1UL << (id & 63);
                    any = true;
                }
                work.Push(child);
            }
        }
        index = new PureIndex(mask, [.. exits], any);
        _pure[bytes] = index;
        return index;
    }

    private sealed record PureIndex(ulong[] Mask, int[] Exits, bool Any);

    private int Step(int state, byte b)
    {
        var set = _sets[state];
        var cached = set.Next[b];
        if (cached != Unknown)
        {
            return cached;
        }
        var seeds = new List<long>();
        var g = _grammar;
        foreach (var config in set.Configs)
        {
            var (s, stack) = Unpack(config);
            for (var e = g.ByteEdgeStart[s]; e < g.ByteEdgeStart[s + 1]; e++)
            {
                var edge = g.ByteEdges[e];
                if (b >= edge.Lo && b <= edge.Hi)
                {
                    seeds.Add(Pack(edge.Target, stack));
                }
            }
        }
        var next = seeds.Count == 0 ? Dead : Closure(seeds);
        set.Next[b] = next;
        return next;
    }

    // Step and TokenStep gather their seeds with the same loop over different edge arrays: written out twice on
    // purpose, because Step's cache misses are the inner loop of every trie walk (a shared delegate made walks 5x slower).
    private int TokenStep(int state, int token)
    {
        var set = _sets[state];
        if (!set.HasTokenEdges)
        {
            return Dead;
        }
        set.TokenNext ??= [];
        if (set.TokenNext.TryGetValue(token, out var cached))
        {
            return cached;
        }
        var seeds = new List<long>();
        var g = _grammar;
        foreach (var config in set.Configs)
        {
            var (s, stack) = Unpack(config);
            for (var e = g.TokenEdgeStart[s]; e < g.TokenEdgeStart[s + 1]; e++)
            {
                if (g.TokenEdges[e].Token == token)
                {
                    seeds.Add(Pack(g.TokenEdges[e].Target, stack));
                }
            }
        }
        var next = seeds.Count == 0 ? Dead : Closure(seeds);
        set.TokenNext[token] = next;
        return next;
    }

    /// <summary>
    /// Follows empty steps, calls (push) and rule ends (pop) from the seeds; keeps the configurations that can consume
    /// something (the kernel) and whether the output may end here. Returns the interned set's id, or -1 when empty.
    /// </summary>
    private int Closure(List<long> seeds)
    {
        var g = _grammar;
        var seen = new HashSet<long>();
        var work = new Stack<long>(seeds);
        var kernel = new List<long>();
        var accepting = false;
        while (work.Count > 0)
        {
            var config = work.Pop();
            if (!seen.Add(config))
            {
                continue;
            }
            var (s, stack) = Unpack(config);
            if (g.ByteEdgeStart[s] < g.ByteEdgeStart[s + 1] || g.TokenEdgeStart[s] < g.TokenEdgeStart[s + 1])
            {
                kernel.Add(config);
            }
            if (g.IsFinal[s])
            {
                if (stack == 0)
                {
                    accepting = true;
                }
                else
                {
                    var frame = _stacks[stack];
                    work.Push(Pack(frame.Return, frame.Parent));
                }
            }
            for (var e = g.EpsilonStart[s]; e < g.EpsilonStart[s + 1]; e++)
            {
                work.Push(Pack(g.Epsilons[e], stack));
            }
            for (var e = g.CallStart[s]; e < g.CallStart[s + 1]; e++)
            {
                var call = g.Calls[e];
                if (call.Tail)
                {
                    work.Push(Pack(g.RuleStart[call.Rule], stack));
                }
                else if (_stacks[stack].Depth < MaxDepth)
                {
                    work.Push(Pack(g.RuleStart[call.Rule], Push(stack, call.Return)));
                }
            }
        }
        if (kernel.Count == 0 && !accepting)
        {
            return Dead;
        }
        kernel.Sort();
        var key = new SetKey([.. kernel], accepting);
        if (_setIds.TryGetValue(key, out var id))
        {
            return id;
        }
        if (_sets.Count >= MaxSets)
        {
            throw new StructuredOutputException($"the grammar reached {MaxSets:N0} distinct parse states (too ambiguous or too deeply nested)");
        }
        id = _sets.Count;
        _sets.Add(NewSet(key));
        _setIds[key] = id;
        return id;
    }

    private ParseSet NewSet(SetKey key)
    {
        var g = _grammar;
        var first = default(ByteSet);
        var tokens = false;
        var minBytes = key.Accepting ? 0 : Grammar.Infinite;
        foreach (var config in key.Configs)
        {
            var (s, stack) = Unpack(config);
            for (var e = g.ByteEdgeStart[s]; e < g.ByteEdgeStart[s + 1]; e++)
            {
                first = first.Union(ByteSet.Range(g.ByteEdges[e].Lo, g.ByteEdges[e].Hi));
            }
            tokens |= g.TokenEdgeStart[s] < g.TokenEdgeStart[s + 1];
            minBytes = Math.Min(minBytes, g.Distance[s] + _stacks[stack].Cost);
        }
        var next = new int[256];
        Array.Fill(next, Unknown);
        return new ParseSet(key.Configs, key.Accepting, first, tokens, minBytes, next);
    }

    private int Push(int parent, int returnState)
    {
        if (_stackIds.TryGetValue((returnState, parent), out var id))
        {
            return id;
        }
        var below = _stacks[parent];
        id = _stacks.Count;
        _stacks.Add((returnState, parent, below.Depth + 1, Math.Min(Grammar.Infinite, below.Cost + _grammar.Distance[returnState])));
        _stackIds[(returnState, parent)] = id;
        return id;
    }

    private static long Pack(int state, int stack) => ((long)state << 32) | (uint)stack;

    private static (int State, int Stack) Unpack(long config) => ((int)(config >> 32), (int)(uint)config);

    private sealed class ParseSet(long[] configs, bool accepting, ByteSet first, bool hasTokenEdges, int minBytes, int[] next)
    {
        public long[] Configs { get; } = configs;
        public bool Accepting { get; } = accepting;
        public ByteSet First { get; } = first;
        public bool HasTokenEdges { get; } = hasTokenEdges;
        public int MinBytes { get; } = minBytes;
        public int[] Next { get; } = next;
        public Dictionary<int, int>? TokenNext { get; set; }
        public ulong[]? Mask { get; set; }
        public int MaxNextMinBytes;
        public int MinNextMinBytes;
        public Dictionary<int, ulong[]>? Budgeted { get; set; }
        public (ByteSet Bytes, int Count)? SelfLoop { get; set; }
        /// <summary>The states its allowed tokens lead to (known once its mask is).</summary>
        public int[]? Successors { get; set; }
    }

    private readonly struct SetKey(long[] configs, bool accepting) : IEquatable<SetKey>
    {
        private readonly int _hash = Hash(configs, accepting);

        public long[] Configs { get; } = configs;
        public bool Accepting { get; } = accepting;

        public bool Equals(SetKey other) => _hash == other._hash && Accepting == other.Accepting && Configs.AsSpan().SequenceEqual(other.Configs);

        public override bool Equals(object? obj) => obj is SetKey other && Equals(other);

        public override int GetHashCode() => _hash;

        private static int Hash(long[] configs, bool accepting)
        {
            var hash = new HashCode();
            hash.Add(accepting);
            foreach (var c in configs)
            {
                hash.Add(c);
            }
            return hash.ToHashCode();
        }
    }
}
