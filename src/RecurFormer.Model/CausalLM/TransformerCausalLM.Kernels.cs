using System.Runtime.CompilerServices;
using RecurFormer.Model.Kernels;
using RecurFormer.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

/// <summary>
/// The CPU kernel path of a decode step. At a few sequences, a decode step is bound by reading the weights once
/// and by the cost of each libtorch operation (~1–4 µs each, hundreds per step); here the whole step is one
/// hand-off to the kernel threads, which stream each weight once at the cache's bandwidth and touch the cache pools
/// in place. Batches above <see cref="KernelBatchLimit"/> take the libtorch path (its bfloat16 matrix products are
/// the ones to win at large batches on bigger models).
/// </summary>
public sealed partial class TransformerCausalLM
{
    /// <summary>
    /// Decode batches up to this many sequences take the kernel path on the CPU (0 turns it off). Measured with
    /// `recurformer bench-step` on the demo teacher (docs/benchmarks.md, "Kernel crossover"): the kernels were about
    /// 2× libtorch at every batch from 1 to 256, so the limit sits at the largest batch measured.
    /// </summary>
    public int KernelBatchLimit { get; set; } = DefaultKernelBatchLimit;

    public const int DefaultKernelBatchLimit = 256;

    private DecodeWorkspace? _workspace;
    private MatVec? _tiedHead;
    private bool? _kernelsSupported;
    private Values _embeddings;

    private bool KernelsSupported => _kernelsSupported ??= Target.Device.type == DeviceType.CPU && Kernel.IsAccelerated
        && Kernel.Supports(model.EmbeddingWeight) && model.Norm.KernelsSupport && model.Layers.All(l => l.KernelsSupport)
        && (lm_head?.Kernel.IsSupported ?? true);

    private bool CanDecodeWithKernels(ForwardBatch batch) =>
        batch.IsDecode && batch.SequenceCount <= KernelBatchLimit && !batch.Training && batch.Capture is null
        && batch.StartFrom is null && batch.LeaveResidual is null
        && !Enumerable.Range(0, batch.SequenceCount).Any(batch.WantsAllLogits)
        && KernelsSupported && batch.Storage.KernelsSupport;

    private unsafe Tensor DecodeWithKernels(ForwardBatch batch)
    {
        var threads = batch.KernelThreads;
        if (_workspace is null || _workspace.Threads.Length < threads.Count || _workspace.Capacity < batch.SequenceCount)
        {
            var capacity = Math.Max(batch.SequenceCount, _workspace?.Capacity ?? 0);
            var threadCount = Math.Max(threads.Count, _workspace?.Threads.Length ?? 0);
            _workspace?.Dispose();
            _workspace = new DecodeWorkspace(Sizes(), capacity, threadCount);
        }
        // Resolved here, before the threads start: a struct field written by one kernel thread can be read half-written
        // by another (that is how a lazily resolved cache view once crashed a decode step).
        if (_embeddings.Data is null)
        {
            _embeddings = Kernel.ValuesOf(model.EmbeddingWeight);
            _tiedHead = lm_head is null ? new MatVec(model.EmbeddingWeight, null) : null;
        }
        var (cos, sin) = _rope.KernelTables(batch.Caches.Max(c => c.Length));
        var logits = empty(batch.SequenceCount, _config.VocabSize, ScalarType.Float32);
        var step = new DecodeStep(batch, _workspace, threads, (float*)cos, (float*)sin, TensorMemory.Pointer<float>(logits));
        threads.Run(thread => Decode(step, thread));
        foreach (var cache in batch.Caches)
        {
            cache.Advance(1);
        }
        return logits;
    }

    /// <summary>One thread's share of the whole step: embeddings, every layer, the final norm and its rows of the LM head.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void Decode(DecodeStep step, int thread)
    {
        var workspace = step.Workspace;
        var hidden = _config.HiddenSize;
        var embeddings = _embeddings;
        if (thread == 0)
        {
            step.StartProfile();
        }
        for (var b = thread; b < step.Batch; b += step.Threads.Count)
        {
            Kernel.Load(embeddings, step.Tokens[b] * hidden, workspace.Hidden + (long)b * hidden, hidden);
        }
        step.Threads.Barrier();
        step.Mark(thread, StepPart.Embedding);
        foreach (var layer in model.Layers)
        {
            layer.Decode(step, thread);
        }
        var scratch = step.Scratch(thread);
        model.Norm.Normalize(workspace.Hidden, scratch.Normed, step.Batch, hidden);
        var head = lm_head?.Kernel ?? _tiedHead!;
        var input = head.PrepareInput(scratch.Normed, step.Batch, hidden, scratch.Input);
        var (start, end) = step.Threads.Share(thread, _config.VocabSize, 4);
        head.Compute(input, step.Logits, _config.VocabSize, start, end);
        step.Threads.Barrier();
        step.Mark(thread, StepPart.Head);
        if (thread == 0)
        {
            step.EndProfile();
        }
    }

    private DecodeSizes Sizes()
    {
        var mixers = Enumerable.Range(0, _config.NumHiddenLayers).Select(_config.MixerShape).OfType<Configuration.MambaMixerShape>().ToArray();
        return new DecodeSizes(
            _config.HiddenSize,
            model.Layers.Max(l => l.Attention.QkvRows),
            _config.NumAttentionHeads * _config.HeadDim,
            _config.IntermediateSize,
            mixers.Select(m => m.InnerSize).DefaultIfEmpty(0).Max(),
            mixers.Select(m => m.TimeStepRank + 2 * m.StateSize).DefaultIfEmpty(0).Max(),
            mixers.Select(m => m.OutputSize).DefaultIfEmpty(0).Max(),
            _config.HeadDim,
            _config.GroupSize,
            _config.VocabSize);
    }

    private void DisposeKernels() => _workspace?.Dispose();
}
