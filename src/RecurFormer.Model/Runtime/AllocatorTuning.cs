using System.Runtime.InteropServices;

namespace RecurFormer.Model.Runtime;

/// <summary>
/// glibc returns freed blocks above a (dynamic) threshold to the kernel with munmap and maps fresh zeroed pages for
/// the next one. Training allocates and frees the same few hundred-kilobyte tensors thousands of times per step, and
/// a prefill its megabyte activations every chunk; on the 2-core CI machine (a VM) the page faults cost more time
/// than the arithmetic (a 3 MB tensor: 768 faults, several milliseconds). Raising the mmap and trim thresholds keeps
/// such blocks in the heap for reuse; resident memory then stays at its high-water mark instead of breathing.
/// Applied once per process, when libtorch is loaded.
/// </summary>
internal static partial class AllocatorTuning
{
    private const int TrimThreshold = -1;  // M_TRIM_THRESHOLD
    private const int MmapThreshold = -3;  // M_MMAP_THRESHOLD

    public static void KeepFreedMemory()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        try
        {
            _ = mallopt(MmapThreshold, 32 << 20);   // the largest value glibc accepts on 64-bit
            _ = mallopt(TrimThreshold, 1 << 30);
        }
        catch (Exception error) when (error is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (e.g. musl): keep the defaults.
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);
}
