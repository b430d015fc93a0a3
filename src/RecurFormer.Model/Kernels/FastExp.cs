using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// e^x for 16 floats at once in about a dozen vector instructions: x·log₂e split into an integer n and a fraction f in
/// [−½, ½], 2^f by its degree-6 Taylor polynomial (relative error below 1e-7, the precision of a float), scaled by 2^n
/// with AVX-512's <c>vscalefps</c>, which also gives 0 where the result underflows and ∞ where it overflows.
/// <c>Vector512.Exp</c> costs as much per vector as sixteen scalar exps here, which made the Mamba scan (an exp per
/// channel and state per token) and SiLU slower than the matrix products around them. NaN stays NaN; −∞ gives 0.
/// </summary>
internal static class FastExp
{
    /// <summary>log₂e: e^x = 2^(x·log₂e).</summary>
    public const float Log2E = 1.44269504088896341f;
    private const byte RoundToNearest = 0; // vrndscaleps: no fraction bits kept, round to nearest even

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        // The raw vmaxps/vminps (the constant first, so that a NaN x is what they return): Vector512.Max and Min add
        // instructions for IEEE 754's NaN and signed-zero rules. Below −110 the result is 0 and above 88.7 it is
        // e^88.7 ≈ 3.3·10³⁸; clamping keeps ±∞ out of f = t − n, where it would make NaN.
        return Decay(Avx512F.Min(Vector512.Create(88.7f), Avx512F.Max(Vector512.Create(-110f), x)));
    }

    /// <summary>
    /// e^x for finite x (0 far below zero, ∞ above 88.7), without the clamps of <see cref="Exp"/>: two instructions fewer.
    /// Bit for bit <see cref="Exp"/> where both are defined.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Decay(Vector512<float> x) => Pow2(x * Vector512.Create(Log2E));

    /// <summary>
    /// 2^x for finite x (0 far below zero, ∞ above 128): <see cref="Decay"/> without its multiplication, for the selective
    /// scan's decays exp(Δ·A) = 2^(Δ · A·log₂e) with A·log₂e computed once per channel (<see cref="Log2E"/>): three of
    /// them are taken per channel, state and token of a training step, and this is their every instruction.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Pow2(Vector512<float> t)
    {
        var n = Avx512F.RoundScale(t, RoundToNearest);
        var f = t - n;
        var p = Vector512.Create(1.5403530e-4f);
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(1.3333558e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(9.6181291e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(5.5504109e-2f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(2.4022651e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(6.9314718e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512<float>.One);
        return Avx512F.Scale(p, n);                                    // p · 2^n, exactly (one rounding, denormals kept)
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
