using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RecurFormer.Model.Kernels;

/// <summary>bfloat16 ⇄ float32: a bfloat16 is the upper half of a float32.</summary>
internal static unsafe class Bf16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort value) => BitConverter.Int32BitsToSingle(value << 16);

    /// <summary>Round to nearest even, as libtorch converts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return 0x7FC0;
        }
        bits += 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)(bits >> 16);
    }

    /// <summary>16 bfloat16 values as float32 (one zero-extension and one shift with AVX-512).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* source) => Avx512F.IsSupported
        ? Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(source)), 16).AsSingle()
        : Vector512.ShiftLeft(Vector512.WidenLower(Vector512.Create(Vector256.Load(source), Vector256<ushort>.Zero)), 16).AsSingle();

    /// <summary>n bfloat16 values as float32 into <paramref name="target"/>.</summary>
    /// <remarks>Inlined: the attention kernels convert a 48-value row per key, and a call there spills their live vectors.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ToFloat(ushort* source, float* target, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Load16(source + i).Store(target + i);
        }
        for (; i < n; i++)
        {
            target[i] = ToFloat(source[i]);
        }
    }

    /// <summary>n floats rounded to the nearest even bfloat16 into <paramref name="target"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FromFloat(float* source, ushort* target, int n)
    {
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Store16(target + i, Vector512.Load(source + i));
        }
        for (; i < n; i++)
        {
            target[i] = FromFloat(source[i]);
        }
    }

    /// <summary>16 floats rounded to the nearest even bfloat16 value and kept as floats (NaN becomes the canonical NaN, as <see cref="FromFloat"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Round(Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + (Vector512.ShiftRightLogical(bits, 16) & Vector512.Create(1u))) & Vector512.Create(0xFFFF0000u);
        return Vector512.ConditionalSelect(Vector512.Equals(value, value), rounded.AsSingle(), Vector512.Create(0x7FC00000u).AsSingle());
    }

    /// <summary>16 floats rounded to nearest even bfloat16 (as <see cref="FromFloat"/>; NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store16(ushort* target, Vector512<float> value) =>
        Avx512F.ConvertToVector256UInt16(Vector512.ShiftRightLogical(Round(value).AsUInt32(), 16)).Store(target);

    /// <summary>
    /// 8 bfloat16 values as the low 8 floats of a vector (the high 8 zero): the tail of a row whose length is 8 past a
    /// multiple of 16, e.g. RoPE's 24-value halves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load8(ushort* source) =>
        Vector512.ShiftLeft(Vector512.WidenLower(Vector512.Create(Vector256.Create(Vector128.Load(source), Vector128<ushort>.Zero), Vector256<ushort>.Zero)), 16).AsSingle();

    /// <summary>The low 8 floats of <paramref name="value"/> rounded as <see cref="Store16"/> rounds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store8(ushort* target, Vector512<float> value) =>
        Vector512.Narrow(Vector512.ShiftRightLogical(Round(value).AsUInt32(), 16), Vector512<uint>.Zero).GetLower().GetLower().Store(target);
}
