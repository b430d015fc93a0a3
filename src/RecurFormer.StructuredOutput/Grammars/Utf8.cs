namespace RecurFormer.StructuredOutput.Grammars;

/// <summary>
/// Code point ranges as byte-level grammar: each range splits into runs whose UTF-8 encodings share a length and
/// differ only in a suffix of continuation bytes, so that [lo, hi] becomes a few sequences of byte ranges (as the
/// utf8-ranges algorithm of Rust's regex does). Surrogates (U+D800..U+DFFF) are never produced.
/// </summary>
public static class Utf8
{
    public const int MaxCodePoint = 0x10FFFF;

    /// <summary>Every code point in the ranges, as alternatives of byte sequences (surrogates removed).</summary>
    public static Node Ranges(IEnumerable<(int Lo, int Hi)> ranges)
    {
        var options = new List<Node>();
        // One-byte ASCII ranges merge into a single byte set: the common case stays a single NFA edge.
        var ascii = default(ByteSet);
        foreach (var (lo, hi) in ranges)
        {
            foreach (var (a, b) in WithoutSurrogates(lo, hi))
            {
                foreach (var (sa, sb) in SplitByLength(a, b))
                {
                    if (sb < 0x80)
                    {
                        ascii = ascii.Union(ByteSet.Range(sa, sb));
                    }
                    else
                    {
                        Encode(sa, sb, options);
                    }
                }
            }
        }
        if (!ascii.IsEmpty)
        {
            options.Insert(0, new ByteSetNode(ascii));
        }
        return options.Count switch
        {
            0 => throw new StructuredOutputException("a character class matches no character"),
            1 => options[0],
            _ => new AltNode(options),
        };
    }

    private static IEnumerable<(int, int)> WithoutSurrogates(int lo, int hi)
    {
        if (hi < 0xD800 || lo > 0xDFFF)
        {
            yield return (lo, hi);
            yield break;
        }
        if (lo < 0xD800)
        {
            yield return (lo, 0xD7FF);
        }
        if (hi > 0xDFFF)
        {
            yield return (0xE000, hi);
        }
    }

    private static readonly int[] LengthLimits = [0x7F, 0x7FF, 0xFFFF, MaxCodePoint];

    private static IEnumerable<(int, int)> SplitByLength(int lo, int hi)
    {
        var start = lo;
        foreach (var limit in LengthLimits)
        {
            if (start > hi)
            {
                yield break;
            }
            if (start <= limit)
            {
                var end = Math.Min(hi, limit);
                yield return (start, end);
                start = end + 1;
            }
        }
    }

    /// <summary>[lo, hi] of one encoded length, split until each piece is a prefix of fixed bytes then full continuation ranges.</summary>
    private static void Encode(int lo, int hi, List<Node> output)
    {
        var length = lo <= 0x7F ? 1 : lo <= 0x7FF ? 2 : lo <= 0xFFFF ? 3 : 4;
        for (var i = 1; i < length; i++)
        {
            var mask = (1 << (6 * i)) - 1;
            if ((lo & ~mask) != (hi & ~mask))
            {
                if ((lo & mask) != 0)
                {
                    Encode(lo, lo | mask, output);
                    Encode((lo | mask) + 1, hi, output);
                    return;
                }
                if ((hi & mask) != mask)
                {
                    Encode(lo, (hi & ~mask) - 1, output);
                    Encode(hi & ~mask, hi, output);
                    return;
                }
            }
        }
        Span<byte> a = stackalloc byte[4];
        Span<byte> b = stackalloc byte[4];
        EncodeOne(lo, a);
        EncodeOne(hi, b);
        var items = new Node[length];
        for (var i = 0; i < length; i++)
        {
            items[i] = new ByteSetNode(ByteSet.Range(a[i], b[i]));
        }
        output.Add(new SeqNode(items));
    }

    private static void EncodeOne(int cp, Span<byte> bytes)
    {
        new System.Text.Rune(cp).EncodeToUtf8(bytes);
    }
}
