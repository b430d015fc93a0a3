using System.Runtime.InteropServices;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// glibc returns freed blocks above a (dynamic) threshold to the kernel with munmap and maps fresh zeroed pages for
/// the next one. Training allocates and frees the same few hundred-kilobyte tensors thousands of times per step;
/// measured on the 2-core CI machine, the page faults cost more system time than the arithmetic took user time.
/// Raising the mmap and trim thresholds keeps such blocks in the heap for reuse.
/// </summary>
public static partial class AllocatorTuning
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
