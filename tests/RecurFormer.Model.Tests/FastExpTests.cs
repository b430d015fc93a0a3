using System.Runtime.Intrinsics;
using RecurFormer.Model.Kernels;

namespace RecurFormer.Model.Tests;

/// <summary>The kernels' exp against System.Math's, over its whole range and at its edges.</summary>
public sealed class FastExpTests
{
    private static float[] Apply(Func<Vector512<float>, Vector512<float>> exp, float[] x)
    {
        var y = new float[x.Length];
        for (var i = 0; i < x.Length; i += 16)
        {
            exp(Vector512.Create(x.AsSpan(i, 16))).CopyTo(y.AsSpan(i, 16));
        }
        return y;
    }

    /// <summary>
    /// From −87 to 88, where e^x is a normal float: within 2e-7 relative (the polynomial's error and the last rounding)
    /// plus what rounding x·log₂e to a float costs, up to 2^−23·|x| relative.
    /// </summary>
    [Fact]
    public void Exp_and_decay_are_exp_to_a_floats_precision()
    {
        Assert.True(Kernel.IsAccelerated, "the kernels need AVX-512");
        var x = Enumerable.Range(0, 16 * 4000).Select(i => -87f + 175f * i / (16 * 4000 - 1)).ToArray();
        foreach (var exp in new Func<Vector512<float>, Vector512<float>>[] { FastExp.Exp, FastExp.Decay })
        {
            var y = Apply(exp, x);
            var worst = x.Select((v, i) => Math.Abs(y[i] / Math.Exp(v) - 1) / (2e-7 + Math.Abs(v) * Math.Pow(2, -23))).Max();
            Assert.True(worst < 1, $"largest error {worst} of the bound");
        }
    }

    /// <summary>Far below zero 0 (−∞ included: attention's masked scores), above 88.7 the largest float, NaN stays NaN.</summary>
    [Fact]
    public void Exp_is_zero_far_below_finite_above_and_nan_for_nan()
    {
        float[] x = [float.NegativeInfinity, -1e30f, -200f, -110f, -104f, float.NaN, 88.7f, 100f, float.PositiveInfinity, 0f, 1f, -1f, -50f, 50f, 2f, -2f];
        var y = Apply(FastExp.Exp, x);
        Assert.All(y[..5], v => Assert.Equal(0f, v));
        Assert.True(float.IsNaN(y[5]));
        Assert.All(y[6..9], v => Assert.True(float.IsFinite(v) && v > 3e38f, $"{v}"));
        Assert.Equal(1f, y[9]);
        // The scan's decays (Δ·A, finite and ≤ 0): 0 far below, and the same values as Exp.
        float[] decays = [-1e30f, -1000f, -200f, -110f, -87f, -50f, -2f, -1f, -0.5f, -1e-3f, -1e-8f, 0f, -3f, -7f, -20f, -60f];
        var d = Apply(FastExp.Decay, decays);
        Assert.All(d[..4], v => Assert.Equal(0f, v));
        Assert.Equal(Apply(FastExp.Exp, decays)[4..], d[4..]);
        Assert.True(float.IsNaN(Apply(FastExp.Decay, Enumerable.Repeat(float.NaN, 16).ToArray())[0]));
    }
}
