namespace RecurFormer.StructuredOutput.Grammars;

/// <summary>
/// A compiled grammar: one nondeterministic automaton over bytes whose states belong to rules, with four kinds of
/// edges: a byte range, an empty step, a call of a rule (with the state to return to) and a special token. A rule
/// is left through its final state, which returns to the caller. This is the recursive transition network that
/// xgrammar and llguidance run as a pushdown automaton; <see cref="Matching.GrammarMatcher"/> runs it with explicit
/// stacks. Immutable once built; vocabulary-independent.
/// </summary>
public sealed class Grammar
{
    /// <summary>Most automaton states one grammar may have (a bound on what one request can make the server build).</summary>
    public const int DefaultMaxStates = 400_000;

    internal const int Infinite = int.MaxValue / 4;

    internal readonly record struct ByteEdge(byte Lo, byte Hi, int Target);
    internal readonly record struct CallEdge(int Rule, int Return, bool Tail);
    internal readonly record struct TokenEdge(int Token, int Target);

    public int StateCount { get; }
    internal int[] ByteEdgeStart { get; }
    internal ByteEdge[] ByteEdges { get; }
    internal int[] EpsilonStart { get; }
    internal int[] Epsilons { get; }
    internal int[] CallStart { get; }
    internal CallEdge[] Calls { get; }
    internal int[] TokenEdgeStart { get; }
    internal TokenEdge[] TokenEdges { get; }
    internal int[] RuleStart { get; }
    internal int[] RuleFinal { get; }
    internal bool[] IsFinal { get; }
    /// <summary>Fewest bytes (special tokens count one) from a state to the final state of its rule.</summary>
    internal int[] Distance { get; }
    internal string[] RuleNames { get; }
    /// <summary>The special tokens that appear in the grammar.</summary>
    internal int[] SpecialTokens { get; }

    private Grammar(Builder b)
    {
        StateCount = b.States;
        (ByteEdgeStart, ByteEdges) = Flatten(b.ByteEdges);
        (EpsilonStart, Epsilons) = Flatten(b.Epsilons);
        (TokenEdgeStart, TokenEdges) = Flatten(b.TokenEdges);
        RuleStart = [.. b.RuleStart];
        RuleFinal = [.. b.RuleFinal];
        RuleNames = [.. b.RuleNames];
        IsFinal = new bool[StateCount];
        foreach (var final in RuleFinal)
        {
            IsFinal[final] = true;
        }
        // A call whose return state is its rule's final state with nothing after it is a tail call: nothing to
        // remember, so right recursion (GBNF lists, JSON arrays written as rules) does not grow the stack.
        bool IsTail(int state)
        {
            // Only single empty steps between the return state and the rule's end: nothing left to do after the call.
            for (var hops = 0; hops < 64; hops++)
            {
                if (b.ByteEdges[state].Count > 0 || b.Calls[state].Count > 0 || b.TokenEdges[state].Count > 0)
                {
                    return false;
                }
                if (IsFinal[state])
                {
                    return b.Epsilons[state].Count == 0;
                }
                if (b.Epsilons[state] is not [var next])
                {
                    return false;
                }
                state = next;
            }
            return false;
        }
        var calls = b.Calls.Select(list => list.Select(c => c with { Tail = IsTail(c.Return) }).ToList()).ToList();
        (CallStart, Calls) = Flatten(calls);
        SpecialTokens = TokenEdges.Select(t => t.Token).Distinct().ToArray();
        Distance = ComputeDistances(out var ruleMin);
        if (ruleMin[0] >= Infinite)
        {
            throw new StructuredOutputException("the grammar admits no finite output (every alternative recurses without end)");
        }
        CheckLeftRecursion(ruleMin);
    }

    /// <summary>Compiles rules (the first, or <paramref name="root"/>, is where output starts).</summary>
    public static Grammar Compile(IReadOnlyDictionary<string, Node> rules, string root, int maxStates = DefaultMaxStates)
    {
        if (!rules.ContainsKey(root))
        {
            throw new StructuredOutputException($"the grammar has no rule '{root}'");
        }
        var builder = new Builder(maxStates);
        var order = new List<string> { root };
        order.AddRange(rules.Keys.Where(k => k != root));
        var index = order.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
        foreach (var name in order)
        {
            builder.RuleNames.Add(name);
            builder.RuleStart.Add(builder.NewState());
            builder.RuleFinal.Add(-1);
        }
        for (var r = 0; r < order.Count; r++)
        {
            builder.RuleFinal[r] = builder.Emit(rules[order[r]], builder.RuleStart[r], index);
        }
        // A rule whose body ends in a shared state (a loop) still needs one final state of its own.
        for (var r = 0; r < order.Count; r++)
        {
            var final = builder.NewState();
            builder.Epsilons[builder.RuleFinal[r]].Add(final);
            builder.RuleFinal[r] = final;
        }
        return new Grammar(builder);
    }

    public static Grammar Compile(GrammarDefinition definition, int maxStates = DefaultMaxStates) =>
        Compile(definition.Rules, definition.Root, maxStates);

    /// <summary>One rule, <c>root</c>.</summary>
    public static Grammar Compile(Node root, int maxStates = DefaultMaxStates) =>
        Compile(new Dictionary<string, Node> { ["root"] = root }, "root", maxStates);

    private static (int[] Start, T[] Items) Flatten<T>(List<List<T>> lists)
    {
        var start = new int[lists.Count + 1];
        for (var i = 0; i < lists.Count; i++)
        {
            start[i + 1] = start[i] + lists[i].Count;
        }
        var items = new T[start[^1]];
        for (var i = 0; i < lists.Count; i++)
        {
            lists[i].CopyTo(items, start[i]);
        }
        return (start, items);
    }

    /// <summary>
    /// Shortest bytes-to-final per state, where a call costs its rule's shortest output: a worklist relaxation from the
    /// final states backwards (a state is looked at again only when a successor, or a rule it calls, got shorter).
    /// </summary>
    private int[] ComputeDistances(out int[] ruleMin)
    {
        var distance = new int[StateCount];
        Array.Fill(distance, Infinite);
        var minimum = new int[RuleStart.Length];
        Array.Fill(minimum, Infinite);
        ruleMin = minimum;
        // Who depends on whom: predecessors through byte, token and empty edges and call returns; callers of each rule.
        var predecessors = new List<int>[StateCount];
        var callers = new List<int>[RuleStart.Length];
        for (var r = 0; r < callers.Length; r++)
        {
            callers[r] = [];
        }
        void AddPredecessor(int target, int source) => (predecessors[target] ??= []).Add(source);
        var ruleOfStart = new Dictionary<int, int>();
        for (var r = 0; r < RuleStart.Length; r++)
        {
            ruleOfStart.TryAdd(RuleStart[r], r);
        }
        for (var s = 0; s < StateCount; s++)
        {
            for (var e = ByteEdgeStart[s]; e < ByteEdgeStart[s + 1]; e++) AddPredecessor(ByteEdges[e].Target, s);
            for (var e = TokenEdgeStart[s]; e < TokenEdgeStart[s + 1]; e++) AddPredecessor(TokenEdges[e].Target, s);
            for (var e = EpsilonStart[s]; e < EpsilonStart[s + 1]; e++) AddPredecessor(Epsilons[e], s);
            for (var e = CallStart[s]; e < CallStart[s + 1]; e++)
            {
                AddPredecessor(Calls[e].Return, s);
                callers[Calls[e].Rule].Add(s);
            }
        }
        int Best(int s)
        {
            var best = distance[s];
            for (var e = ByteEdgeStart[s]; e < ByteEdgeStart[s + 1]; e++) best = Math.Min(best, distance[ByteEdges[e].Target] + 1);
            for (var e = TokenEdgeStart[s]; e < TokenEdgeStart[s + 1]; e++) best = Math.Min(best, distance[TokenEdges[e].Target] + 1);
            for (var e = EpsilonStart[s]; e < EpsilonStart[s + 1]; e++) best = Math.Min(best, distance[Epsilons[e]]);
            for (var e = CallStart[s]; e < CallStart[s + 1]; e++) best = Math.Min(best, Math.Min(Infinite, minimum[Calls[e].Rule] + distance[Calls[e].Return]));
            return best;
        }
        var queue = new Queue<int>();
        var queued = new bool[StateCount];
        foreach (var final in RuleFinal)
        {
            distance[final] = 0;
            queue.Enqueue(final);
            queued[final] = true;
        }
        void Revisit(int s)
        {
            var best = Best(s);
            if (best < distance[s])
            {
                distance[s] = best;
                if (!queued[s])
                {
                    queued[s] = true;
                    queue.Enqueue(s);
                }
            }
        }
        while (queue.Count > 0)
        {
            var t = queue.Dequeue();
            queued[t] = false;
            if (ruleOfStart.TryGetValue(t, out var rule) && distance[t] < minimum[rule])
            {
                minimum[rule] = distance[t];
                foreach (var caller in callers[rule])
                {
                    Revisit(caller);
                }
            }
            foreach (var s in predecessors[t] ?? [])
            {
                Revisit(s);
            }
        }
        return distance;
    }

    /// <summary>
    /// A rule that can call itself before consuming a byte would push stacks forever: refused, naming the rule
    /// (for JSON Schema: a <c>$ref</c> cycle with no object or array in between).
    /// </summary>
    private void CheckLeftRecursion(int[] ruleMin)
    {
        var leftCalls = new List<int>[RuleStart.Length];
        for (var r = 0; r < RuleStart.Length; r++)
        {
            leftCalls[r] = [];
            var seen = new HashSet<int>();
            var work = new Stack<int>();
            work.Push(RuleStart[r]);
            while (work.Count > 0)
            {
                var s = work.Pop();
                if (!seen.Add(s))
                {
                    continue;
                }
                for (var e = EpsilonStart[s]; e < EpsilonStart[s + 1]; e++)
                {
                    work.Push(Epsilons[e]);
                }
                for (var e = CallStart[s]; e < CallStart[s + 1]; e++)
                {
                    leftCalls[r].Add(Calls[e].Rule);
                    if (ruleMin[Calls[e].Rule] == 0)
                    {
                        work.Push(Calls[e].Return);
                    }
                }
            }
        }
        var state = new int[RuleStart.Length]; // 0 new, 1 on the path, 2 done
        void Visit(int r, List<int> path)
        {
            state[r] = 1;
            path.Add(r);
            foreach (var callee in leftCalls[r])
            {
                if (state[callee] == 1)
                {
                    var cycle = path.Skip(path.IndexOf(callee)).Append(callee).Select(i => RuleNames[i]);
                    throw new StructuredOutputException($"the grammar is left-recursive: {string.Join(" -> ", cycle)} calls itself before any output");
                }
                if (state[callee] == 0)
                {
                    Visit(callee, path);
                }
            }
            path.RemoveAt(path.Count - 1);
            state[r] = 2;
        }
        for (var r = 0; r < RuleStart.Length; r++)
        {
            if (state[r] == 0)
            {
                Visit(r, []);
            }
        }
    }

    private sealed class Builder(int maxStates)
    {
        public int States;
        public readonly List<List<ByteEdge>> ByteEdges = [];
        public readonly List<List<int>> Epsilons = [];
        public readonly List<List<CallEdge>> Calls = [];
        public readonly List<List<TokenEdge>> TokenEdges = [];
        public readonly List<int> RuleStart = [];
        public readonly List<int> RuleFinal = [];
        public readonly List<string> RuleNames = [];

        public int NewState()
        {
            if (States >= maxStates)
            {
                throw new StructuredOutputException($"the schema or grammar is too large: it needs more than {maxStates:N0} automaton states (long enums, big repetition counts or maxLength/maxItems values add up)");
            }
            ByteEdges.Add([]);
            Epsilons.Add([]);
            Calls.Add([]);
            TokenEdges.Add([]);
            return States++;
        }

        private void AddBytes(int from, ByteSet set, int to)
        {
            foreach (var (lo, hi) in set.Ranges())
            {
                ByteEdges[from].Add(new ByteEdge(lo, hi, to));
            }
        }

        /// <summary>Adds <paramref name="node"/> starting at <paramref name="from"/>; returns the state where it ends.</summary>
        public int Emit(Node node, int from, IReadOnlyDictionary<string, int> rules)
        {
            switch (node)
            {
                case ByteSetNode set:
                {
                    var to = NewState();
                    AddBytes(from, set.Set, to);
                    return to;
                }
                case SeqNode seq:
                {
                    var at = from;
                    foreach (var item in seq.Items)
                    {
                        at = Emit(item, at, rules);
                    }
                    return at;
                }
                case AltNode alt:
                {
                    // Options share the entry state: no emitted node ever adds an edge into the state it starts from
                    // (loops go through fresh states), so one option cannot wander into another.
                    var end = NewState();
                    foreach (var option in alt.Options)
                    {
                        if (option is ByteSetNode single)
                        {
                            AddBytes(from, single.Set, end);
                        }
                        else
                        {
                            Epsilons[Emit(option, from, rules)].Add(end);
                        }
                    }
                    return end;
                }
                case RepeatNode repeat:
                {
                    var at = from;
                    for (var i = 0; i < repeat.Min; i++)
                    {
                        at = Emit(repeat.Item, at, rules);
                    }
                    if (repeat.Max == RepeatNode.Unbounded)
                    {
                        var loop = NewState();
                        Epsilons[at].Add(loop);
                        Epsilons[Emit(repeat.Item, loop, rules)].Add(loop);
                        return loop;
                    }
                    var end = NewState();
                    Epsilons[at].Add(end);
                    for (var i = repeat.Min; i < repeat.Max; i++)
                    {
                        at = Emit(repeat.Item, at, rules);
                        Epsilons[at].Add(end);
                    }
                    return end;
                }
                case RuleNode call:
                {
                    if (!rules.TryGetValue(call.Name, out var rule))
                    {
                        throw new StructuredOutputException($"the grammar uses the undefined rule '{call.Name}'");
                    }
                    var back = NewState();
                    Calls[from].Add(new CallEdge(rule, back, false));
                    return back;
                }
                case TokenNode token:
                {
                    var to = NewState();
                    TokenEdges[from].Add(new TokenEdge(token.TokenId, to));
                    return to;
                }
                default:
                    throw new InvalidOperationException($"unknown grammar node {node.GetType().Name}");
            }
        }
    }
}
