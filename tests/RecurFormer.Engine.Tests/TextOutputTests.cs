using RecurFormer.Engine.Output;
using RecurFormer.Engine.Requests;
using static RecurFormer.Engine.Tests.EngineHarness;

namespace RecurFormer.Engine.Tests;

/// <summary>Stop strings and UTF-8 across token boundaries.</summary>
public sealed class TextOutputTests
{
    private static (string Text, bool Stopped, List<string> Deltas) Feed(string text, params string[] stops)
    {
        var output = new TextOutput(Tokenizer, stops);
        var deltas = new List<string>();
        foreach (var token in Tokenizer.Encode(text))
        {
            var (delta, stopped) = output.Add(token);
            deltas.Add(delta);
            if (stopped)
            {
                return (string.Concat(deltas), true, deltas);
            }
        }
        deltas.Add(output.Finish());
        return (string.Concat(deltas), false, deltas);
    }

    [Fact]
    public void A_stop_string_split_across_tokens_stops_and_is_not_emitted()
    {
        var text = "Gets the headers that are supported by the resource.";
        Assert.True(Tokenizer.Encode("supported").Length > 1);
        var (emitted, stopped, _) = Feed(text, "ported by");
        Assert.True(stopped);
        Assert.Equal("Gets the headers that are sup", emitted);
    }

    [Fact]
    public void Text_that_might_start_a_stop_string_is_held_back_then_released()
    {
        var (emitted, stopped, deltas) = Feed("one two three", "two four");
        Assert.False(stopped);
        Assert.Equal("one two three", emitted);
        // "two" could have become "two four": it comes out only once " three" rules that out.
        var heldUntil = deltas.FindIndex(d => d.Contains("two", StringComparison.Ordinal));
        Assert.Contains("three", string.Concat(deltas.Take(heldUntil + 1)));
    }

    [Fact]
    public void Multi_byte_characters_split_across_tokens_are_never_emitted_in_halves()
    {
        var text = "Größe: 😀 日本語 ✓";
        var ids = Tokenizer.Encode(text);
        Assert.True(ids.Length > text.Length / 2, "byte-level BPE splits these characters into several tokens");
        var (emitted, _, deltas) = Feed(text);
        Assert.Equal(text, emitted);
        Assert.All(deltas, d => Assert.DoesNotContain('\uFFFD', d));
        Assert.All(deltas.Where(d => d.Length > 0), d => Assert.False(char.IsHighSurrogate(d[^1])));
    }

    [Fact]
    public async Task Engine_deltas_concatenate_to_the_full_decode()
    {
        using var engine = Start(DemoTeacher);
        var result = await Collect(engine.Submit(Request("decode", Tokenizer.Encode(ChatPrompt("What is System.Text.Json.JsonSerializer for?")), Greedy(40) with { IgnoreEos = true })));
        Assert.Equal(Tokenizer.Decode(result.Tokens[0], skipSpecialTokens: true), result.TextOf());
    }

    [Fact]
    public async Task Engine_stop_strings_end_the_choice_with_reason_stop()
    {
        using var engine = Start(DemoTeacher);
        var prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));
        var result = await Collect(engine.Submit(Request("stop", prompt, Greedy(60) with { Stop = ["instance is"] })));
        Assert.Equal(FinishReason.Stop, result.Reasons[0]);
        Assert.Equal("Determines whether the current System.Threading.CancellationToken ", result.TextOf());
    }

    [Fact]
    public async Task Min_tokens_suppresses_eos_and_logprobs_are_reported()
    {
        using var engine = Start(DemoTeacher);
        var prompt = Tokenizer.Encode(ChatPrompt("Explain System.Threading.CancellationToken.Equals."));
        var result = await Collect(engine.Submit(Request("min", prompt, Greedy(80) with { MinTokens = 60, Logprobs = true, TopLogprobs = 3 })));
        Assert.True(result.Tokens[0].Count >= 60);
        var tokens = result.Events.OfType<TokenEvent>().ToList();
        Assert.All(tokens, t => Assert.Equal(3, t.Logprob!.Top.Count));
        Assert.All(tokens.Take(10), t => Assert.True(t.Logprob!.Logprob <= 0));
        Assert.All(tokens.Take(10), t => Assert.Equal(t.TokenId, t.Logprob!.Top[0].TokenId)); // greedy picks the best
    }
}
