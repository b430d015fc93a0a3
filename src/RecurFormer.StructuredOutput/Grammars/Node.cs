namespace RecurFormer.StructuredOutput.Grammars;

/// <summary>
/// A grammar expression over bytes: what every front end (JSON Schema, regex, choices, GBNF) produces and
/// <see cref="Grammar"/> compiles. Characters are already UTF-8 (or JSON-escaped) byte sequences here.
/// </summary>
public abstract record Node
{
    public static readonly Node Empty = new SeqNode([]);

    public static Node Literal(string text) => Bytes(System.Text.Encoding.UTF8.GetBytes(text));

    public static Node Bytes(ReadOnlySpan<byte> bytes)
    {
        var items = new Node[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
        {
            items[i] = new ByteSetNode(ByteSet.Of(bytes[i]));
        }
        return items.Length == 1 ? items[0] : new SeqNode(items);
    }

    public static Node Seq(params Node[] items) => items.Length == 1 ? items[0] : new SeqNode(items);

    public static Node Alt(params Node[] options) => options.Length == 1 ? options[0] : new AltNode(options);

    public static Node Optional(Node item) => new RepeatNode(item, 0, 1);

    public static Node Star(Node item) => new RepeatNode(item, 0, RepeatNode.Unbounded);
}

/// <summary>One byte from a set.</summary>
public sealed record ByteSetNode(ByteSet Set) : Node;

public sealed record SeqNode(IReadOnlyList<Node> Items) : Node;

public sealed record AltNode(IReadOnlyList<Node> Options) : Node;

/// <summary><see cref="Item"/> between <see cref="Min"/> and <see cref="Max"/> times (<see cref="Unbounded"/>: no upper limit).</summary>
public sealed record RepeatNode(Node Item, int Min, int Max) : Node
{
    public const int Unbounded = -1;
}

/// <summary>A call of a named rule: how recursion (and sharing of large sub-grammars) is expressed.</summary>
public sealed record RuleNode(string Name) : Node;

/// <summary>One special token by id (e.g. Mistral's <c>[TOOL_CALLS]</c>), which has no byte spelling the model may use.</summary>
public sealed record TokenNode(int TokenId) : Node;

/// <summary>256 bits: the bytes one step may consume.</summary>
public readonly record struct ByteSet(ulong W0, ulong W1, ulong W2, ulong W3)
{
    public static ByteSet Of(byte b) => Range(b, b);

    public static ByteSet Range(int lo, int hi)
    {
        static ulong Word(int w, int lo, int hi)
        {
            var first = Math.Max(lo, w * 64);
            var last = Math.Min(hi, w * 64 + 63);
            if (first > last)
            {
                return 0;
            }
            var count = last - first + 1;
            var bits = count == 64 ? ulong.MaxValue : ((1UL << count) - 1);
            return bits << (first - w * 64);
        }
        return new ByteSet(Word(0, lo, hi), Word(1, lo, hi), Word(2, lo, hi), Word(3, lo, hi));
    }

    public static ByteSet All => new(ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue);

    public bool Contains(int b) => ((b >> 6) switch { 0 => W0, 1 => W1, 2 => W2, _ => W3 } & (1UL << (b & 63))) != 0;

    public bool IsEmpty => (W0 | W1 | W2 | W3) == 0;

    public ByteSet Union(ByteSet other) => new(W0 | other.W0, W1 | other.W1, W2 | other.W2, W3 | other.W3);

    public ByteSet Except(ByteSet other) => new(W0 & ~other.W0, W1 & ~other.W1, W2 & ~other.W2, W3 & ~other.W3);

    /// <summary>The set as maximal runs [lo, hi].</summary>
    public List<(byte Lo, byte Hi)> Ranges()
    {
        var runs = new List<(byte, byte)>();
        var b = NextWith(0, set: true);
        while (b < 256)
        {
            var end = NextWith(b, set: false);
            runs.Add(((byte)b, (byte)(end - 1)));
            b = NextWith(end, set: true);
        }
        return runs;
    }

    /// <summary>The first byte at or after <paramref name="from"/> that is (or is not) in the set; 256 when none.</summary>
    private int NextWith(int from, bool set)
    {
        for (var w = from >> 6; w < 4; w++)
        {
            var word = w switch { 0 => W0, 1 => W1, 2 => W2, _ => W3 };
            if (!set)
            {
                word = ~word;
            }
            if (w == from >> 6)
            {
                word &= ulong.MaxValue << (from & 63);
            }
            if (word != 0)
            {
                return w * 64 + System.Numerics.BitOperations.TrailingZeroCount(word);
            }
        }
        return 256;
    }
}
