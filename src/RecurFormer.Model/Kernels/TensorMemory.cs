using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// The memory behind a CPU tensor, for the hand-written kernels. The tensor must be contiguous and stay alive (and
/// unresized) while the pointer or span is used; libtorch never moves a tensor's storage.
/// </summary>
public static unsafe class TensorMemory
{
    public static T* Pointer<T>(Tensor tensor) where T : unmanaged
    {
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
        {
            throw new ArgumentException("kernels need a contiguous CPU tensor");
        }
        fixed (byte* bytes = tensor.bytes)
        {
            return (T*)bytes;
        }
    }

    public static Span<T> Span<T>(Tensor tensor) where T : unmanaged =>
        new(Pointer<T>(tensor), checked((int)(tensor.numel() * tensor.ElementSize / sizeof(T))));

    /// <summary>Native memory aligned for 512-bit loads, zeroed; free with <see cref="Free"/>.</summary>
    public static T* Allocate<T>(long count) where T : unmanaged
    {
        var bytes = (nuint)(Math.Max(count, 1) * sizeof(T));
        var memory = NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(memory, bytes);
        return (T*)memory;
    }

    public static void Free(void* memory) => NativeMemory.AlignedFree(memory);
}
