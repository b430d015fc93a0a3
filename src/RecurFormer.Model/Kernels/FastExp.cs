using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// e^x for 16 floats at once in about ten vector instructions: x·log₂e split into an integer n and a fraction f in
/// [−½, ½], 2^f by its degree-6 Taylor polynomial (relative error below 1e-7, the precision of a float) and 2^n put in
/// the exponent bits. <c>Vector512.Exp</c> costs as much per vector as sixteen scalar exps here, which made the Mamba
/// scan (an exp per channel and state per token) and SiLU slower than the matrix products around them. Inputs below
/// −87 give 0; NaN stays NaN.
/// </summary>
internal static class FastExp
{
    private const float Log2E = 1.44269504088896341f;
    private const float RoundingMagic = 12582912f; // 1.5 × 2^23: adding it rounds a float to an integer
    private const int RoundingMagicBits = 0x4B400000;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var clamped = Vector512.Min(Vector512.Max(x, Vector512.Create(-87.3f)), Vector512.Create(88.7f));
        var t = clamped * Vector512.Create(Log2E);
        var rounded = t + Vector512.Create(RoundingMagic);          // n in the low mantissa bits
        var n = rounded - Vector512.Create(RoundingMagic);
        var f = t - n;
        var p = Vector512.Create(1.5403530e-4f);
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(1.3333558e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(9.6181291e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(5.5504109e-2f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(2.4022651e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(6.9314718e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512<float>.One);
        // 2^n: the integer n read from those mantissa bits (a float→int conversion costs four instructions here).
        var exponent = rounded.AsInt32() - Vector512.Create(RoundingMagicBits - 127);
        var scale = Vector512.ShiftLeft(exponent, 23).AsSingle();
        var result = p * scale;
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(-87.3f)), Vector512<float>.Zero, result);
    }

    /// <summary>
    /// softplus(x) = log(1 + eᕽ) = max(x, 0) + log(1 + e^−|x|), the log of a value in (1, 2] by the atanh series in
    /// s = (w − 1) / (w + 1) ≤ ⅓ (six terms: error below 1e-7).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Softplus(Vector512<float> x)
    {
        var w = Vector512<float>.One + Exp(-Vector512.Abs(x));
        var s = (w - Vector512<float>.One) / (w + Vector512<float>.One);
        var s2 = s * s;
        var series = Vector512.Create(1f / 11);
        series = Vector512.FusedMultiplyAdd(series, s2, Vector512.Create(1f / 9));
        series = Vector512.FusedMultiplyAdd(series, s2, Vector512.Create(1f / 7));
        series = Vector512.FusedMultiplyAdd(series, s2, Vector512.Create(1f / 5));
        series = Vector512.FusedMultiplyAdd(series, s2, Vector512.Create(1f / 3));
        series = Vector512.FusedMultiplyAdd(series, s2, Vector512<float>.One);
        return Vector512.Max(x, Vector512<float>.Zero) + Vector512.Create(2f) * s * series;
    }

    /// <summary>σ(x) = 1 / (1 + e^−x): softplus′ and part of SiLU′ in the training scan's backward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Sigmoid(Vector512<float> x) => Vector512<float>.One / (Vector512<float>.One + Exp(-x));

    /// <summary>SiLU, x · σ(x) = x / (1 + e^−x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Silu(Vector512<float> x) => x / (Vector512<float>.One + Exp(-x));
}
