using RecurFormer.Tokenization;

namespace RecurFormer.StructuredOutput.Matching;

/// <summary>
/// The vocabulary as byte strings, in a trie: a mask is computed by walking the trie once from a grammar state, so
/// tokens that share a prefix share its work (as xgrammar and llguidance do). Special tokens (end of sequence, chat
/// markers) are left out of the trie: they are allowed only where a grammar names them as tokens, and end of
/// sequence is the engine's business. Built once per tokenizer; immutable and thread-safe.
/// </summary>
public sealed class TokenVocabulary
{
    // Trie in flat arrays: node n's children are edges [ChildStart[n], ChildStart[n+1]), sorted by byte.
    internal int[] ChildStart { get; }
    internal byte[] EdgeByte { get; }
    internal int[] EdgeChild { get; }
    // Tokens that end at node n: [TokenStart[n], TokenStart[n+1]) in TokenIds.
    internal int[] TokenStart { get; }
    internal int[] TokenIds { get; }

    private readonly byte[]?[] _bytes;
    private readonly Dictionary<string, int> _special;

    /// <param name="tokens">Each token id's bytes, null for ids that are no token.</param>
    /// <param name="special">Special tokens: kept out of the trie, reachable by their text through <see cref="TryGetSpecialToken"/>.</param>
    public TokenVocabulary(IReadOnlyList<byte[]?> tokens, IReadOnlyDictionary<int, string> special)
    {
        Size = tokens.Count;
        _bytes = new byte[]?[tokens.Count];
        _special = special.ToDictionary(kv => kv.Value, kv => kv.Key, StringComparer.Ordinal);
        var root = new BuildNode();
        var nodes = 1;
        for (var id = 0; id < tokens.Count; id++)
        {
            if (tokens[id] is not { Length: > 0 } bytes || special.ContainsKey(id))
            {
                continue;
            }
            _bytes[id] = bytes;
            var node = root;
            foreach (var b in bytes)
            {
                node.Children ??= [];
                if (!node.Children.TryGetValue(b, out var child))
                {
                    child = new BuildNode();
                    node.Children[b] = child;
                    nodes++;
                }
                node = child;
            }
            (node.Tokens ??= []).Add(id);
        }
        ChildStart = new int[nodes + 1];
        EdgeByte = new byte[nodes - 1];
        EdgeChild = new int[nodes - 1];
        TokenStart = new int[nodes + 1];
        var tokenIds = new List<int>();
        // Breadth-first numbering: node ids in order, children contiguous.
        var queue = new Queue<BuildNode>();
        queue.Enqueue(root);
        var next = 1;
        var edge = 0;
        var n = 0;
        while (queue.Count > 0)
        {
            var node = queue.Dequeue();
            ChildStart[n] = edge;
            TokenStart[n] = tokenIds.Count;
            if (node.Tokens is { } ids)
            {
                tokenIds.AddRange(ids);
            }
            foreach (var (b, child) in (node.Children ?? []).OrderBy(kv => kv.Key))
            {
                EdgeByte[edge] = b;
                EdgeChild[edge] = next++;
                edge++;
                queue.Enqueue(child);
            }
            n++;
        }
        ChildStart[nodes] = edge;
        TokenStart[nodes] = tokenIds.Count;
        TokenIds = [.. tokenIds];
        TrieNodes = nodes;
    }

    /// <summary>From a checkpoint's tokenizer: every token's decoded bytes; its special added tokens apart.</summary>
    public static TokenVocabulary FromTokenizer(CheckpointTokenizer tokenizer)
    {
        var tokens = new byte[]?[tokenizer.VocabSize];
        for (var id = 0; id < tokens.Length; id++)
        {
            tokens[id] = tokenizer.IsValidTokenId(id) ? tokenizer.GetTokenBytes(id).ToArray() : null;
        }
        var special = tokenizer.SpecialTokenIds.ToDictionary(id => id, tokenizer.GetTokenString);
        return new TokenVocabulary(tokens, special);
    }

    /// <summary>Token ids 0..Size-1 (the model's embedding may have more rows; those are never allowed).</summary>
    public int Size { get; }

    public int TrieNodes { get; }

    /// <summary>The bytes of a token in the trie, or null for a special token or an unused id.</summary>
    public byte[]? Bytes(int token) => (uint)token < (uint)_bytes.Length ? _bytes[token] : null;

    /// <summary>A special token by its text (e.g. <c>[TOOL_CALLS]</c>).</summary>
    public bool TryGetSpecialToken(string text, out int id) => _special.TryGetValue(text, out id);

    private sealed class BuildNode
    {
        public Dictionary<byte, BuildNode>? Children;
        public List<int>? Tokens;
    }
}
