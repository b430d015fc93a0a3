using RecurFormer.StructuredOutput.Grammars;

namespace RecurFormer.StructuredOutput.Json;

/// <summary>
/// Integers in [min, max] as JSON writes them (no leading zeros), built digit by digit: a same-length range
/// lo..hi is "lo[0] then the rest of lo up to 9…9", "a middle first digit then anything", "hi[0] then 0…0 up to
/// the rest of hi" — the usual regex construction for numeric ranges.
/// </summary>
public static class IntegerRange
{
    /// <summary>The largest magnitude handled (15 digits; an open bound stops here too).</summary>
    public const long Limit = 999_999_999_999_999;

    /// <summary>The grammar of [min, max] (null = open); null when a bound is beyond <see cref="Limit"/>.</summary>
    public static Node? Build(long? min, long? max)
    {
        var lo = min ?? -Limit;
        var hi = max ?? Limit;
        if (Math.Abs(lo) > Limit || Math.Abs(hi) > Limit)
        {
            return null;
        }
        var options = new List<Node>();
        if (lo < 0)
        {
            // Negative part [lo, min(hi, -1)] written as "-" and the magnitudes [max(1, -hi), -lo].
            var magnitudeLo = hi < 0 ? -hi : 1;
            options.Add(Node.Seq(Node.Literal("-"), NonNegative(magnitudeLo, -lo)));
        }
        if (hi >= 0)
        {
            options.Add(NonNegative(Math.Max(lo, 0), hi));
        }
        return Node.Alt([.. options]);
    }

    private static Node NonNegative(long lo, long hi)
    {
        var options = new List<Node>();
        for (var length = Digits(lo); length <= Digits(hi); length++)
        {
            var start = Math.Max(lo, length == 1 ? 0 : Pow10(length - 1));
            var end = Math.Min(hi, Pow10(length) - 1);
            if (start <= end)
            {
                options.Add(SameLength(start.ToString(System.Globalization.CultureInfo.InvariantCulture), end.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            }
        }
        return Node.Alt([.. options]);
    }

    private static Node SameLength(string lo, string hi)
    {
        if (lo.Length == 0)
        {
            return Node.Empty;
        }
        if (lo.Length == 1)
        {
            return new ByteSetNode(ByteSet.Range(lo[0], hi[0]));
        }
        if (lo[0] == hi[0])
        {
            return Node.Seq(Node.Literal(lo[..1]), SameLength(lo[1..], hi[1..]));
        }
        var rest = lo.Length - 1;
        var options = new List<Node>();
        var nines = new string('9', rest);
        var zeros = new string('0', rest);
        if (lo[1..] == zeros && hi[1..] == nines)
        {
            return Node.Seq(new ByteSetNode(ByteSet.Range(lo[0], hi[0])), AnyDigits(rest));
        }
        var firstFull = lo[1..] == zeros ? lo[0] : (char)(lo[0] + 1);
        var lastFull = hi[1..] == nines ? hi[0] : (char)(hi[0] - 1);
        if (lo[1..] != zeros)
        {
            options.Add(Node.Seq(Node.Literal(lo[..1]), SameLength(lo[1..], nines)));
        }
        if (firstFull <= lastFull)
        {
            options.Add(Node.Seq(new ByteSetNode(ByteSet.Range(firstFull, lastFull)), AnyDigits(rest)));
        }
        if (hi[1..] != nines)
        {
            options.Add(Node.Seq(Node.Literal(hi[..1]), SameLength(zeros, hi[1..])));
        }
        return Node.Alt([.. options]);
    }

    private static Node AnyDigits(int count) => new RepeatNode(new ByteSetNode(ByteSet.Range('0', '9')), count, count);

    private static int Digits(long value) => value.ToString(System.Globalization.CultureInfo.InvariantCulture).Length;

    private static long Pow10(int exponent)
    {
        var result = 1L;
        for (var i = 0; i < exponent; i++)
        {
            result *= 10;
        }
        return result;
    }
}
