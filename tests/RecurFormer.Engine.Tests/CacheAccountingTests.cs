using System.Text.Json.Nodes;
using RecurFormer.Engine.Caching;
using RecurFormer.Engine.Requests;
using RecurFormer.Model.Configuration;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>The cache manager's figures equal the analytic formula of docs/engine.md, for every kind of state.</summary>
public sealed class CacheAccountingTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("recurformer-engine-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>The demo teacher with KV groups 0 and 1 of every layer windowed (64 + 4 sinks): 50% of the KV.</summary>
    private string WindowedTeacher()
    {
        foreach (var file in Directory.GetFiles(DemoTeacher))
        {
            File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)), overwrite: true);
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "config.json")))!.AsObject();
        config["recurformer"] = new HybridLayout
        {
            Layers = Enumerable.Range(0, 8).Select(_ => new LayerReplacement([], [0, 1])).ToArray(),
            Window = new WindowSpec(64, 4),
        }.ToJson();
        File.WriteAllText(Path.Combine(_folder, "config.json"), config.ToJsonString());
        return _folder;
    }

    [Fact]
    public void Layout_of_the_teacher_is_the_plain_KV_formula()
    {
        using var engine = Start(DemoTeacher, new EngineOptions { CacheMemoryBytes = 64L << 20, KvCacheDType = "float32" });
        var layout = engine.Layout;
        // 2 (K and V) × 8 layers × 4 KV heads × 48 dims × 4 bytes per token.
        Assert.Equal(2L * 8 * 4 * 48 * 4, layout.KvBytesPerToken);
        Assert.Equal(layout.KvBytesPerToken, layout.AllGroupsBytesPerToken);
        Assert.Equal(0, layout.SlotBytes);
        Assert.Equal((int)((64L << 20) / (layout.KvBytesPerToken * 16)), engine.Stats.Cache.BlocksTotal);
    }

    [Fact]
    public void A_16_bit_kv_cache_halves_the_bytes_per_token()
    {
        using var wide = Start(DemoTeacher, new EngineOptions { KvCacheDType = "float32" });
        using var narrow = Start(DemoTeacher, new EngineOptions { KvCacheDType = "float16" });
        Assert.Equal(wide.Layout.KvBytesPerToken, 2 * narrow.Layout.KvBytesPerToken);
        Assert.InRange(narrow.Stats.Cache.BlocksTotal, 2 * wide.Stats.Cache.BlocksTotal, 2 * wide.Stats.Cache.BlocksTotal + 1);
    }

    [Fact]
    public async Task Usage_while_running_equals_the_formula_for_windowed_groups()
    {
        using var engine = Start(WindowedTeacher(), new EngineOptions { CacheMemoryBytes = 64L << 20, KvCacheDType = "float32" });
        var layout = engine.Layout;
        Assert.Equal(2L * 8 * 2 * 48 * 4, layout.KvBytesPerToken);             // the two full groups
        Assert.Equal(2L * 8 * 2 * (64 + 4) * 48 * 4, layout.WindowSlotBytes);   // the two windowed groups' rings
        Assert.Equal(2L * 8 * 4 * 48 * 4, layout.AllGroupsBytesPerToken);

        var prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));
        using var gate = new CancellationTokenSource();
        // Generates up to the context (seconds of decoding), so that a test thread the loaded CI machine delays still
        // finds the sequence running: with 200 tokens it once came back after the request had finished.
        var events = engine.Submit(Request("held", prompt, Greedy(2048 - prompt.Length) with { IgnoreEos = true }), gate.Token);
        Assert.IsType<ScheduledEvent>(await events.ReadAsync());
        Assert.IsType<TokenEvent>(await events.ReadAsync()); // the sequence holds its blocks and ring buffers

        var usage = (await WaitFor(engine, s => s.Cache.Sequences == 1)).Cache; // stats are published at the end of the step
        if (usage.Sequences != 1)
        {
            gate.Cancel();
            var rest = await Collect(events);
            Assert.Fail($"the request was no longer running when observed; it ended with {rest.Error ?? rest.Reasons[0]?.ToString() ?? "nothing"} after {rest.Tokens[0].Count} more tokens");
        }
        var reserved = usage.BlocksInUse * 16;
        Assert.Equal(1, usage.Sequences);
        Assert.Equal(usage.BlocksInUse * layout.BlockBytes, usage.KvBytes);
        Assert.Equal(layout.WindowSlotBytes, usage.WindowKvBytes);
        Assert.Equal(0, usage.MambaStateBytes);
        Assert.Equal(reserved * layout.AllGroupsBytesPerToken, usage.WithoutReplacementBytes);
        Assert.Equal(1.0 - (double)usage.TotalBytes / usage.WithoutReplacementBytes, usage.SavedRatio, 12);
        gate.Cancel();
        var idle = await WaitIdle(engine);
        Assert.Equal(0, idle.Cache.TotalBytes);
    }

    [Fact]
    public async Task A_windowed_model_generates_the_same_as_plain_attention_while_the_window_covers_everything()
    {
        var prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));
        Assert.True(prompt.Length + 20 <= 64 + 4);
        using var plain = Start(DemoTeacher);
        using var windowed = Start(WindowedTeacher());
        var expected = await Collect(plain.Submit(Request("plain", prompt, Greedy(20) with { IgnoreEos = true })));
        var actual = await Collect(windowed.Submit(Request("windowed", prompt, Greedy(20) with { IgnoreEos = true })));
        Assert.Equal(expected.Tokens[0], actual.Tokens[0]);
    }

    [Fact]
    public async Task A_mamba_model_holds_fixed_state_per_sequence_and_generates_the_reference()
    {
        var folder = Fixture("mamba-tiny");
        using var engine = Start(folder, tokenizer: false);
        var layout = engine.Layout;
        Assert.Equal(0, layout.BlockBytes);
        Assert.Equal(2L * 4 * 128 * (3 + 16), layout.MambaSlotBytes); // 2 layers × float32 × d_inner × (d_conv − 1 + d_state)

        using var reference = Model.Checkpoints.SafeTensorsFile.Open(Path.Combine(folder, "reference.safetensors"));
        var prompts = Enumerable.Range(0, 3).Select(i => reference.Load($"prompt_{i}").data<long>().Select(t => (int)t).ToArray()).ToArray();
        var greedy = Enumerable.Range(0, 3).Select(i => reference.Load($"greedy_{i}").data<long>().Select(t => (int)t).ToArray()).ToArray();
        var results = await Task.WhenAll(prompts.Select((p, i) => Collect(engine.Submit(Request($"mamba-{i}", p, Greedy(24) with { IgnoreEos = true })))));
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(greedy[i], results[i].Tokens[0]);
        }
    }
}
