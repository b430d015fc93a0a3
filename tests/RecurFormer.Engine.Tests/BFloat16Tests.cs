using RecurFormer.Engine.Requests;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>
/// bfloat16 compute (the default on CPUs with bfloat16 instructions) and a 16-bit KV cache give the answers float32
/// gives: the README's question, alone and in a batch that mixes the kernel decode with prefill chunks.
/// </summary>
public sealed class BFloat16Tests
{
    private const string ReferenceAnswer =
        "Determines whether the current System.Threading.CancellationToken instance is equal to the specified System.Object. It returns true if the specified object is equal to the current instance; otherwise, false.";

    [Fact]
    public async Task The_READMEs_question_gets_the_reference_answer_in_bfloat16()
    {
        using var engine = Start(DemoTeacher, dtype: "bfloat16");
        Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, engine.Layout.KvDType);
        var prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));
        var alone = await Collect(engine.Submit(Request("alone", prompt, Greedy(80))));
        Assert.Equal(ReferenceAnswer, alone.TextOf());

        // The same question among others arriving together: decode batches of several sequences next to prefill chunks.
        var others = new[] { "What is System.Text.Json.JsonSerializer for?", "Describe the method System.Uri.IsHexEncoding." }
            .Select(q => Tokenizer.Encode(ChatPrompt(q))).ToArray();
        var together = await Task.WhenAll(new[] { prompt }.Concat(others).Select((p, i) => Collect(engine.Submit(Request($"together-{i}", p, Greedy(80))))));
        Assert.Equal(ReferenceAnswer, together[0].TextOf());
    }
}
