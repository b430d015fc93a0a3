using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>
/// The process's allocator keeps what a thread other than the main one frees (<c>AllocatorTuning</c>): without the top
/// padding, glibc unmapped a worker thread's emptied heaps and mapped fresh zeroed pages for the next step, which cost
/// distill's second worker 5,000–10,000 page faults per stage-2 step (docs/conversion.md, "Thirteenth round").
/// </summary>
public sealed partial class AllocatorTuningTests
{
    private const int Rounds = 12;
    private const int WarmRounds = 4;

    [Fact]
    public void A_worker_thread_that_frees_and_allocates_large_tensors_each_round_reuses_its_pages()
    {
        long faults = -1;
        var worker = new Thread(() =>
        {
            long start = 0;
            for (var round = 0; round < Rounds; round++)
            {
                if (round == WarmRounds)
                {
                    start = ThreadMinorFaults();
                }
                // 16 MB tensors (a stage-2 share's logits are this size): more than one 64 MB heap of the thread's
                // arena holds, so each round maps a second heap and empties it again.
                using var scope = NewDisposeScope();
                var tensors = Enumerable.Range(0, 5).Select(_ => ones(4 << 20)).ToArray();
                Assert.Equal(5 * (4 << 20), tensors.Sum(t => t.sum().item<float>()));
            }
            faults = ThreadMinorFaults() - start;
        });
        worker.Start();
        worker.Join();

        // Measured on the development machine: ~1 fault a round with the setting, ~1,500 without it (the second heap's
        // pages that the round touched, mapped afresh). A new thread gets an arena of its own while the process has
        // fewer than glibc's limit (8 per core); past it, it would share one and could pass without the setting.
        var perRound = faults / (double)(Rounds - WarmRounds);
        Assert.True(perRound < 200, $"{perRound:F0} page faults per round of allocations on a worker thread");
    }

    private static long ThreadMinorFaults()
    {
        Assert.Equal(0, getrusage(RusageThread, out var usage));
        return usage.MinorFaults;
    }

    private const int RusageThread = 1;

    /// <summary>Linux's struct rusage on 64-bit: two timevals, then fourteen longs.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Rusage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds;
        public long MaxResident, SharedText, UnsharedData, UnsharedStack;
        public long MinorFaults, MajorFaults, Swaps, BlockInputs, BlockOutputs;
        public long MessagesSent, MessagesReceived, Signals, VoluntarySwitches, InvoluntarySwitches;
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int getrusage(int who, out Rusage usage);
}
