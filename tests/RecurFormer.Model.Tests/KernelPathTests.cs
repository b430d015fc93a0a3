using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>
/// The CPU kernel path of a decode step against the libtorch path of the same model, in float32: mixed batches of
/// different lengths, plain, windowed (rings that wrap) and Mamba groups, alone and all three in one layer.
/// </summary>
public sealed class KernelPathTests
{
    public static TheoryData<string> Models() =>
        ["qwen2-tiny", "llama-tiny", "hybrid", "hybrid-conv2", "window-mamba", "window-mamba-conv1", "demo-teacher", "demo-window", "demo-recurformer"];

    /// <summary>Layer 0 mixes Mamba, window-Mamba and full groups (the mixer places and adds heads); layer 1 a window beside a window-Mamba group.</summary>
    private static IReadOnlyList<LayerReplacement> WindowMambaLayers =>
        [new LayerReplacement([0], []) { WindowMambaGroups = [1] }, new LayerReplacement([], [0]) { WindowMambaGroups = [2] }];

    private static string Folder(string name, out IDisposable? owner)
    {
        owner = null;
        switch (name)
        {
            case "hybrid-conv2":
                // A conv state of one column (d_conv 2), as the thirteenth round's default model had.
                var two = new HybridFixture("llama-tiny", [new LayerReplacement([0], [1]), new LayerReplacement([], [2])], new WindowSpec(6, 2),
                    mamba: new MambaSpec(2, 8, 2, null));
                owner = two;
                return two.Folder;
            case "window-mamba-conv1":
                // d_conv 1: the convolution is a per-channel scale and the mixer holds no conv state at all.
                var one = new HybridFixture("llama-tiny", WindowMambaLayers, new WindowSpec(6, 2), mamba: new MambaSpec(1, 4, 1, null));
                owner = one;
                return one.Folder;
            case "hybrid":
                // llama-tiny has 3 KV groups: layer 0 mixes Mamba, window and full; layer 1 has a window only. The window is
                // short (6 + 2 sinks) so that the rings wrap many times.
                var fixture = new HybridFixture("llama-tiny", [new LayerReplacement([0], [1]), new LayerReplacement([], [2])], new WindowSpec(6, 2));
                owner = fixture;
                return fixture.Folder;
            case "window-mamba":
                // Samba-style groups (window attention plus the mixer's output): layer 0 has Mamba, window-Mamba and full
                // groups, so the mixer both places and adds heads; layer 1 a plain window beside a window-Mamba group.
                var both = new HybridFixture("llama-tiny", WindowMambaLayers, new WindowSpec(6, 2));
                owner = both;
                return both.Folder;
            case "demo-teacher":
                return TestData.DemoTeacher;
            case "demo-window":
                return Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-window-16m");
            case "demo-recurformer":
                return Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-recurformer-16m");
            default:
                return TestData.Fixture(name);
        }
    }

    private static long[][] Prompts(int vocab) =>
    [
        Enumerable.Range(0, 3).Select(i => (long)(i * 37 % vocab)).ToArray(),
        Enumerable.Range(0, 40).Select(i => (long)((i * 101 + 7) % vocab)).ToArray(),
        Enumerable.Range(0, 97).Select(i => (long)((i * 53 + 11) % vocab)).ToArray(),
    ];

    [Theory]
    [MemberData(nameof(Models))]
    public void A_mixed_batch_decodes_the_same_with_kernels_as_with_libtorch(string name)
    {
        var folder = Folder(name, out var owner);
        using var _ = owner;
        using var loaded = TestData.Load(folder);
        var model = (TransformerCausalLM)loaded;
        using var threads = new KernelThreads(2);
        var prompts = Prompts(model.Config.VocabSize);
        using var kernelCaches = loaded.CreateCache(200, prompts.Length);
        using var torchCaches = loaded.CreateCache(200, prompts.Length);
        model.Forward(new ForwardBatch(prompts, kernelCaches.Sequences)).Dispose();
        using var last = model.Forward(new ForwardBatch(prompts, torchCaches.Sequences));
        var next = last.argmax(1).data<long>().Select(t => new[] { t }).ToArray();

        for (var step = 0; step < 40; step++)
        {
            model.KernelBatchLimit = 8;
            using var kernels = model.Forward(new ForwardBatch(next, kernelCaches.Sequences) { Threads = threads });
            model.KernelBatchLimit = 0;
            using var libtorch = model.Forward(new ForwardBatch(next, torchCaches.Sequences));
            var difference = (kernels - libtorch).abs().max().item<float>();
            Assert.True(difference < 1e-4, $"{name} step {step}: max |Δlogit| = {difference}");
            next = libtorch.argmax(1).data<long>().Select(t => new[] { t }).ToArray();
        }
        model.KernelBatchLimit = TransformerCausalLM.DefaultKernelBatchLimit;
    }

    [Theory]
    [InlineData("hybrid")]
    [InlineData("demo-recurformer")]
    public void The_kernels_give_the_same_bits_on_one_thread_and_on_three(string name)
    {
        var folder = Folder(name, out var owner);
        using var _ = owner;
        using var model = TestData.Load(folder);
        using var three = new KernelThreads(3);
        var prompts = Prompts(model.Config.VocabSize);
        using var one = model.CreateCache(120, prompts.Length);
        using var many = model.CreateCache(120, prompts.Length);
        model.Forward(new ForwardBatch(prompts, one.Sequences)).Dispose();
        model.Forward(new ForwardBatch(prompts, many.Sequences)).Dispose();
        var next = prompts.Select(p => new[] { p[^1] }).ToArray();
        for (var step = 0; step < 8; step++)
        {
            using var single = model.Forward(new ForwardBatch(next, one.Sequences));
            using var shared = model.Forward(new ForwardBatch(next, many.Sequences) { Threads = three });
            Assert.Equal(0f, (single - shared).abs().max().item<float>());
            next = single.argmax(1).data<long>().Select(t => new[] { t }).ToArray();
        }
    }

    [Theory]
    [InlineData("hybrid")]
    [InlineData("hybrid-conv2")]
    [InlineData("window-mamba-conv1")]
    [InlineData("demo-window")]
    [InlineData("demo-recurformer")]
    public void Chunked_prefill_equals_one_prefill_when_chunks_cross_the_window(string name)
    {
        var folder = Folder(name, out var owner);
        using var _ = owner;
        using var model = TestData.Load(folder);
        using var threads = new KernelThreads(2);
        var ids = Prompts(model.Config.VocabSize)[2]; // 97 tokens: past the windows of 8 and of 68 positions
        var (difference, _) = ChunkedPrefillDifference(model, ids, [(0, 30), (30, 1), (31, 45), (76, 21)], threads);
        Assert.True(difference < 1e-4, $"{name}: max |Δlogit| = {difference}");
    }

    /// <summary>
    /// A training forward (stage 2's path: each sequence's attention one autograd node, windowed groups through the
    /// same node with their sinks and window) gives the logits of an inference prefill (the prefill kernels), over a
    /// batch of 97 and 40 tokens: past every window, with rings that wrap.
    /// </summary>
    [Theory]
    [InlineData("hybrid")]
    [InlineData("window-mamba")]
    [InlineData("demo-window")]
    [InlineData("demo-recurformer")]
    public void A_training_forward_gives_the_logits_of_a_prefill(string name)
    {
        var folder = Folder(name, out var owner);
        using var _ = owner;
        using var model = TestData.Load(folder);
        using var threads = new KernelThreads(2);
        using var scope = NewDisposeScope();
        var prompts = Prompts(model.Config.VocabSize);
        long[][] ids = [prompts[2], prompts[1]];
        using var trainingCaches = model.CreateCache(ids[0].Length, ids.Length);
        using var prefillCaches = model.CreateCache(ids[0].Length, ids.Length);
        var training = model.Forward(new ForwardBatch(ids, trainingCaches.Sequences) { AllLogits = true, Training = true, Threads = threads }).detach();
        var prefill = model.Forward(new ForwardBatch(ids, prefillCaches.Sequences) { AllLogits = true, Threads = threads });
        var difference = (training.to_type(ScalarType.Float32) - prefill.to_type(ScalarType.Float32)).abs().max().item<float>();
        Assert.True(difference < 1e-4, $"{name}: max |Δlogit| = {difference}");
    }

    /// <summary>
    /// libtorch's prefill (CUDA's, and the CPU's where the KV dtype has no kernels, as float16 here) continues a
    /// sequence from its conv and SSM state as one prefill does: the conv state holds the last d_conv − 1 inputs.
    /// </summary>
    [Theory]
    [InlineData("hybrid")]
    [InlineData("hybrid-conv2")]
    [InlineData("window-mamba-conv1")]
    public void Chunked_prefill_on_libtorch_equals_one_prefill(string name)
    {
        var folder = Folder(name, out var owner);
        using var _ = owner;
        using var model = CausalLMLoader.FromPretrained(folder, Runtime.TorchRuntime.Initialize(new Runtime.TorchOptions { DType = "float16" }));
        var ids = Prompts(model.Config.VocabSize)[2];
        var (difference, largest) = ChunkedPrefillDifference(model, ids, [(0, 30), (30, 1), (31, 2), (33, 64)]);
        Assert.True(difference < 2e-2, $"{name}: max |Δlogit| = {difference} (logits up to {largest})");
    }

    /// <summary>
    /// The largest |Δlogit| between one prefill of <paramref name="ids"/> and the same ids prefilled chunk after chunk
    /// into another cache, and the largest |logit| of the one prefill; both float32.
    /// </summary>
    private static (float Difference, float Largest) ChunkedPrefillDifference(ICausalLM model, long[] ids, (int Start, int Length)[] chunks,
        KernelThreads? threads = null)
    {
        using var scope = NewDisposeScope();
        using var whole = model.CreateCache(ids.Length);
        var expected = model.Forward(new ForwardBatch([ids], whole.Sequences) { AllLogits = true, Threads = threads }).to_type(ScalarType.Float32);
        using var chunked = model.CreateCache(ids.Length);
        var parts = chunks.Select(c => model.Forward(new ForwardBatch([ids[c.Start..(c.Start + c.Length)]], chunked.Sequences) { AllLogits = true, Threads = threads }))
            .ToArray(); // in order: each chunk continues the cache the one before left
        var actual = cat(parts, 0).to_type(ScalarType.Float32);
        return ((actual - expected).abs().max().item<float>(), expected.abs().max().item<float>());
    }
}
