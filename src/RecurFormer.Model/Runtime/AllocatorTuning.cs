using System.Runtime.InteropServices;

namespace RecurFormer.Model.Runtime;

/// <summary>
/// glibc returns freed blocks above a (dynamic) threshold to the kernel with munmap and maps fresh zeroed pages for
/// the next one. Training allocates and frees the same few hundred-kilobyte tensors thousands of times per step, and
/// a prefill its megabyte activations every chunk; on the 2-core CI machine (a VM) the page faults cost more time
/// than the arithmetic (a 3 MB tensor: 768 faults, several milliseconds). Raising the mmap and trim thresholds keeps
/// such blocks in the heap for reuse; resident memory then stays at its high-water mark instead of breathing.
/// A thread other than the main one allocates from its own arena, made of 64 MB heaps that glibc unmaps as soon as
/// one is empty, whatever the trim threshold, unless the top padding is larger than what emptied it: distill's second
/// worker freed and mapped 20–40 MB of 16 MB logits per stage-2 step that way (5,000–10,000 page faults a step; with
/// the padding, stage 2 at 4 × 256 ran 18% faster at the median of five pairs, docs/conversion.md). A 64 MB top padding keeps those heaps; it reserves address space, and only pages touched
/// become resident.
/// Small blocks (up to 128 bytes: libtorch's tensor metadata, TorchSharp's handles) that overflow the per-thread cache
/// go to "fast bins", which are never merged until a large request sweeps them all into the free lists
/// (malloc_consolidate); a training step's thousands of small frees made that sweep, and the searches behind it, 5% of
/// a stage-2 profile. Without fast bins (M_MXFAST 0) a small block is merged when freed; stage 2 ran 3% faster at the
/// median of seven pairs, the serving engine level (docs/conversion.md, nineteenth round).
/// Applied once per process, when libtorch is loaded.
/// </summary>
internal static partial class AllocatorTuning
{
    private const int TrimThreshold = -1;  // M_TRIM_THRESHOLD
    private const int TopPad = -2;         // M_TOP_PAD
    private const int MmapThreshold = -3;  // M_MMAP_THRESHOLD
    private const int MaxFast = 1;         // M_MXFAST

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
            _ = mallopt(TopPad, 64 << 20);          // a whole heap of a thread's arena (HEAP_MAX_SIZE)
            _ = mallopt(MaxFast, 0);                // no fast bins
        }
        catch (Exception error) when (error is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (e.g. musl): keep the defaults.
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);
}
