using RecurFormer.Model.CausalLM;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>
/// A forward that leaves its residual stream at a layer, and a forward that starts from it: the same logits as one
/// whole forward, and clear errors where the stream cannot be used.
/// </summary>
public sealed class ResidualHandoffTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void A_forward_from_a_left_stream_gives_the_whole_forwards_logits(int layer)
    {
        using var scope = NewDisposeScope();
        var folder = TestData.Fixture("qwen2-tiny");
        using var model = TestData.Load(folder);
        long[][] tokens = [TestData.ReferenceIds(folder, "prompt_1"), TestData.ReferenceIds(folder, "prompt_2")[..40]];
        using var handoff = new ResidualHandoff(layer);
        Tensor Logits(ResidualHandoff? leave, ResidualHandoff? start)
        {
            using var cache = model.CreateCache(256, tokens.Length);
            return model.Forward(new ForwardBatch(tokens, cache.Sequences) { AllLogits = true, LeaveResidual = leave, StartFrom = start });
        }

        var whole = Logits(handoff, null);
        Assert.NotNull(handoff.Hidden);
        Assert.Equal([tokens.Sum(t => (long)t.Length), model.Config.HiddenSize], handoff.Hidden!.shape);
        var resumed = Logits(null, handoff);
        Assert.True(whole.eq(resumed).all().item<bool>(), $"layer {layer}: max |Δlogit| = {(whole - resumed).abs().max().item<float>()}");
    }

    [Fact]
    public void A_stream_that_was_never_left_or_does_not_fit_is_refused()
    {
        using var scope = NewDisposeScope();
        var folder = TestData.Fixture("qwen2-tiny");
        using var model = TestData.Load(folder);
        var ids = TestData.ReferenceIds(folder, "prompt_1");
        using var empty = new ResidualHandoff(1);
        using var shorter = new ResidualHandoff(1);
        using (var cache = model.CreateCache(256))
        {
            model.Forward(new ForwardBatch([ids[..5]], cache.Sequences) { LeaveResidual = shorter }).Dispose();
        }

        using var caches = model.CreateCache(256);
        Assert.Throws<InvalidOperationException>(() => model.Forward(new ForwardBatch([ids], caches.Sequences) { StartFrom = empty }));
        Assert.Throws<ArgumentException>(() => model.Forward(new ForwardBatch([ids], caches.Sequences) { StartFrom = shorter }));
    }
}
