using System.Runtime.InteropServices;
using RecurFormer.Model.Caching;
using RecurFormer.Model.CausalLM;

namespace RecurFormer.Model.Kernels;

/// <summary>Sizes of the buffers one decode step needs, the largest over the model's layers.</summary>
internal sealed record DecodeSizes(int Hidden, int QkvRows, int HeadColumns, int Intermediate, int MambaInner, int MambaParameters, int MambaOutput, int HeadDim, int GroupSize, int Vocab)
{
    /// <summary>Widest input any matrix-vector product of the step reads.</summary>
    public int WidestInput => new[] { Hidden, HeadColumns, Intermediate, MambaInner }.Max();
}

/// <summary>
/// Native buffers of the CPU decode kernels, allocated once for the largest batch the kernels take and reused by
/// every step (a decode step allocates nothing): activations shared by all threads, and each thread's scratch. Only
/// attention scores grow, with the longest sequence seen.
/// </summary>
internal sealed unsafe class DecodeWorkspace : IDisposable
{
    private readonly List<IntPtr> _owned = [];

    public DecodeWorkspace(DecodeSizes sizes, int batch, int threads)
    {
        Sizes = sizes;
        Capacity = batch;
        Hidden = Allocate(batch * sizes.Hidden);
        Qkv = Allocate(batch * Math.Max(sizes.QkvRows, 1));
        Heads = Allocate(batch * sizes.HeadColumns);
        GateUp = Allocate(batch * 2 * sizes.Intermediate);
        MambaXz = Allocate(batch * 2 * Math.Max(sizes.MambaInner, 1));
        MambaXc = Allocate(batch * Math.Max(sizes.MambaInner, 1));
        MambaParameters = Allocate(batch * Math.Max(sizes.MambaParameters, 1));
        MambaY = Allocate(batch * Math.Max(sizes.MambaInner, 1));
        MambaOut = Allocate(batch * Math.Max(sizes.MambaOutput, 1));
        Threads = Enumerable.Range(0, threads).Select(_ => new ThreadScratch(
            Allocate(batch * sizes.Hidden),
            Allocate(batch * sizes.WidestInput),
            Allocate((sizes.GroupSize + 1) * sizes.HeadDim),
            Allocate(sizes.GroupSize * sizes.HeadDim))).ToArray();
    }

    public DecodeSizes Sizes { get; }
    public int Capacity { get; }

    /// <summary>The residual stream [B, hidden].</summary>
    public float* Hidden { get; }

    /// <summary>Fused q/k/v of the attending groups [B, qkvRows].</summary>
    public float* Qkv { get; }

    /// <summary>Every head's output in original head order, the input of o_proj [B, heads × headDim].</summary>
    public float* Heads { get; }

    /// <summary>gate | up [B, 2 × intermediate]; silu(gate) · up is left in the gate half.</summary>
    public float* GateUp { get; }

    public float* MambaXz { get; }
    public float* MambaXc { get; }
    public float* MambaParameters { get; }
    public float* MambaY { get; }
    public float* MambaOut { get; }

    public ThreadScratch[] Threads { get; }

    /// <summary>Per thread: attention scores of one group's query heads over the longest sequence, and where each key is.</summary>
    public float*[] Scores { get; private set; } = [];
    public long*[] KeyOffsets { get; private set; } = [];
    private int _scoreCapacity;

    public void EnsureScores(int length)
    {
        if (length <= _scoreCapacity)
        {
            return;
        }
        var capacity = Math.Max(length, _scoreCapacity * 2);
        for (var t = 0; t < Scores.Length; t++)
        {
            Release((IntPtr)Scores[t]);
            Release((IntPtr)KeyOffsets[t]);
        }
        Scores = new float*[Threads.Length];
        KeyOffsets = new long*[Threads.Length];
        for (var t = 0; t < Threads.Length; t++)
        {
            Scores[t] = Allocate(Sizes.GroupSize * capacity);
            KeyOffsets[t] = (long*)Allocate(2 * (capacity + 1)); // longs, and one more for a ring's write index
        }
        _scoreCapacity = capacity;
    }

    private float* Allocate(int count)
    {
        var memory = TensorMemory.Allocate<float>(Math.Max(count, 16));
        _owned.Add((IntPtr)memory);
        return memory;
    }

    private void Release(IntPtr memory)
    {
        _owned.Remove(memory);
        TensorMemory.Free((void*)memory);
    }

    public void Dispose()
    {
        foreach (var memory in _owned)
        {
            TensorMemory.Free((void*)memory);
        }
        _owned.Clear();
    }
}

/// <summary>One thread's private buffers: a normalised copy of the residual, a reordered matrix input, RoPE'd q/k.</summary>
internal sealed unsafe class ThreadScratch(float* normed, float* input, float* queryKey, float* output)
{
    public float* Normed { get; } = normed;
    public float* Input { get; } = input;
    public float* QueryKey { get; } = queryKey;
    public float* Output { get; } = output;
}

/// <summary>
/// One decode step as the kernels see it: the batch's sequences (slot, position, blocks), the cache storage, the
/// workspace, the RoPE rows and the threads. Built by the model on the calling thread before the threads start.
/// </summary>
internal sealed unsafe class DecodeStep
{
    public DecodeStep(ForwardBatch batch, DecodeWorkspace workspace, KernelThreads threads, float* cos, float* sin, float* logits)
    {
        Batch = batch.SequenceCount;
        Storage = batch.Storage;
        Workspace = workspace;
        Threads = threads;
        Positions = batch.Caches.Select(c => c.Length).ToArray();
        Slots = batch.Caches.Select(c => c.Slot).ToArray();
        Blocks = batch.Caches.Select(c => c.Blocks).ToArray();
        Tokens = batch.Tokens.Select(t => t[0]).ToArray();
        Cos = cos;
        Sin = sin;
        Logits = logits;
        Profile = batch.Profile;
        workspace.EnsureScores(Positions.Max() + 1);
    }

    private KernelProfile? Profile { get; }

    /// <summary>Thread 0 closes a phase of the profile (when one is attached).</summary>
    public void Mark(int thread, StepPart part)
    {
        if (thread == 0)
        {
            Profile?.Mark(part);
        }
    }

    public void StartProfile() => Profile?.Start();

    public void EndProfile() => Profile?.EndStep();

    public int Batch { get; }
    public CacheStorage Storage { get; }
    public DecodeWorkspace Workspace { get; }
    public KernelThreads Threads { get; }

    /// <summary>Each sequence's position of the new token (its cache length before the step).</summary>
    public int[] Positions { get; }
    public int[] Slots { get; }
    public IReadOnlyList<int>[] Blocks { get; }
    public long[] Tokens { get; }

    /// <summary>RoPE tables [positions, headDim / 2], float32.</summary>
    public float* Cos { get; }
    public float* Sin { get; }

    /// <summary>The output [B, vocab].</summary>
    public float* Logits { get; }

    public ThreadScratch Scratch(int thread) => Workspace.Threads[thread];
}
