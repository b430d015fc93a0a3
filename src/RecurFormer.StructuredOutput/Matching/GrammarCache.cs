using RecurFormer.StructuredOutput.Grammars;

namespace RecurFormer.StructuredOutput.Matching;

/// <summary>
/// Compiled grammars by key (the request's schema, pattern or grammar text), most recently used kept: a client
/// that sends the same schema again gets the automaton and every mask it already computed. A new grammar's masks
/// are prepared for up to <see cref="WarmBudget"/> on the caller's thread. Thread-safe; compilation runs outside
/// the lock, so one slow schema does not hold up requests with other schemas.
/// </summary>
public sealed class GrammarCache(TokenVocabulary vocabulary, int capacity = 64)
{
    /// <summary>How long a new grammar's masks are prepared on the compiling (request) thread before the engine needs them.</summary>
    public static readonly TimeSpan WarmBudget = TimeSpan.FromMilliseconds(100);

    private readonly object _lock = new();
    private readonly LinkedList<(string Key, GrammarMatcher Matcher)> _order = new();
    private readonly Dictionary<string, LinkedListNode<(string Key, GrammarMatcher Matcher)>> _entries = new(StringComparer.Ordinal);

    public TokenVocabulary Vocabulary => vocabulary;

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <exception cref="StructuredOutputException">The grammar cannot be compiled.</exception>
    public GrammarMatcher GetOrCompile(string key, Func<GrammarDefinition> build)
    {
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var hit))
            {
                _order.Remove(hit);
                _order.AddFirst(hit);
                return hit.Value.Matcher;
            }
        }
        var matcher = new GrammarMatcher(Grammar.Compile(build()), vocabulary);
        matcher.Warm(WarmBudget);
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var raced))
            {
                return raced.Value.Matcher;
            }
            _entries[key] = _order.AddFirst((key, matcher));
            while (_entries.Count > capacity)
            {
                _entries.Remove(_order.Last!.Value.Key);
                _order.RemoveLast();
            }
            return matcher;
        }
    }
}
