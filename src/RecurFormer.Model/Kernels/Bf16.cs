using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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

    /// <summary>16 bfloat16 values as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* source) =>
        Vector512.ShiftLeft(Vector512.WidenLower(Vector512.Create(Vector256.Load(source), Vector256<ushort>.Zero)), 16).AsSingle();
}
