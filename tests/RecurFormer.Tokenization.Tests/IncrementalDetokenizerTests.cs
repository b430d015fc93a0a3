using System.Text;

namespace RecurFormer.Tokenization.Tests;

/// <summary>Streaming detokenisation: never half a UTF-8 character, and the deltas add up to Decode of all ids.</summary>
public class IncrementalDetokenizerTests
{
    private static CheckpointTokenizer Tokenizer => TestData.DemoTokenizer;

    [Theory]
    [InlineData("😀")]
    [InlineData("Streaming 😀🎉 emoji, 世界 CJK, naïve café — dashes…")]
    [InlineData("<|im_start|>assistant\n你好，世界！<|im_end|>")]
    public void MultiByteCharactersSplitAcrossTokensAreEmittedWhole(string text)
    {
        var ids = Tokenizer.Encode(text);
        // The point of the test: at least one token must end in the middle of a character.
        Assert.Contains(ids, id => !IsCompleteUtf8(Tokenizer.GetTokenBytes(id)));

        var detokenizer = Tokenizer.CreateDetokenizer();
        var deltas = ids.Select(detokenizer.Add).ToList();
        deltas.Add(detokenizer.Flush());

        Assert.All(deltas, delta => Assert.DoesNotContain('\uFFFD', delta));
        Assert.All(deltas, delta => Assert.False(delta.Length > 0 && char.IsHighSurrogate(delta[^1]), "delta ends in half a surrogate pair"));
        Assert.Equal(text, string.Concat(deltas));
        Assert.Equal(Tokenizer.Decode(ids), string.Concat(deltas));
        Assert.Contains(deltas, delta => delta.Length == 0); // held back while a character was incomplete
    }

    [Fact]
    public void EmojiBytesAreHeldBackUntilTheCharacterIsComplete()
    {
        var ids = Tokenizer.Encode("😀");
        Assert.True(ids.Length > 1);
        var detokenizer = Tokenizer.CreateDetokenizer();
        for (int i = 0; i < ids.Length - 1; i++) Assert.Equal("", detokenizer.Add(ids[i]));
        Assert.Equal("😀", detokenizer.Add(ids[^1]));
        Assert.Equal("", detokenizer.Flush());
    }

    [Fact]
    public void DeltasConcatenateToDecodeOnEveryValidationText()
    {
        foreach (var text in TestData.ValidationTexts)
        {
            var ids = Tokenizer.Encode(text);
            var detokenizer = Tokenizer.CreateDetokenizer();
            var streamed = new StringBuilder();
            foreach (int id in ids) streamed.Append(detokenizer.Add(id));
            streamed.Append(detokenizer.Flush());
            Assert.Equal(Tokenizer.Decode(ids), streamed.ToString());
        }
    }

    [Fact]
    public void SkippingSpecialTokensMatchesDecodeWithSkip()
    {
        var ids = Tokenizer.Encode("<|im_start|>user\nWhat is 世界?<|im_end|>\n");
        var detokenizer = Tokenizer.CreateDetokenizer(skipSpecialTokens: true);
        string streamed = string.Concat(ids.Select(detokenizer.Add)) + detokenizer.Flush();

        Assert.Equal(Tokenizer.Decode(ids, skipSpecialTokens: true), streamed);
        Assert.Equal("user\nWhat is 世界?\n", streamed);
    }

    [Fact]
    public void ASequenceCutInsideACharacterFlushesTheSameReplacementCharacterAsDecode()
    {
        var ids = Tokenizer.Encode("ab😀");
        var cut = ids[..^1]; // the last byte(s) of the emoji never arrive
        var detokenizer = Tokenizer.CreateDetokenizer();
        string streamed = string.Concat(cut.Select(detokenizer.Add));
        string flushed = detokenizer.Flush();

        Assert.Equal("ab", streamed);
        Assert.Contains('\uFFFD', flushed);
        Assert.Equal(Tokenizer.Decode(cut), streamed + flushed);
    }

    [Fact]
    public void ResetStartsANewSequence()
    {
        var detokenizer = Tokenizer.CreateDetokenizer();
        var emoji = Tokenizer.Encode("😀");
        detokenizer.Add(emoji[0]);
        detokenizer.Reset();
        Assert.Empty(detokenizer.Ids);
        Assert.Equal("hi", string.Concat(Tokenizer.Encode("hi").Select(detokenizer.Add)) + detokenizer.Flush());
    }

    [Fact]
    public void IdOutsideTheVocabularyIsRejected()
    {
        var detokenizer = Tokenizer.CreateDetokenizer();
        Assert.Throws<TokenIdOutOfRangeException>(() => detokenizer.Add(8192));
        Assert.Empty(detokenizer.Ids);
    }

    private static bool IsCompleteUtf8(ReadOnlySpan<byte> bytes) => System.Text.Unicode.Utf8.IsValid(bytes);
}

/// <summary>Byte sequences that are not valid UTF-8 (possible when a model generates tokens in an odd order).</summary>
public class InvalidUtf8DetokenizationTests
{
    private static CheckpointTokenizer Tokenizer => TestData.DemoTokenizer;

    public static TheoryData<int[]> BrokenSequences()
    {
        var emoji = Tokenizer.Encode("😀");
        var a = Tokenizer.Encode("a");
        var sequences = new TheoryData<int[]>();
        sequences.Add(emoji.Reverse().ToArray());
        sequences.Add([.. emoji[1..], .. a]);
        sequences.Add([emoji[0], .. a, .. emoji[1..]]);
        sequences.Add([.. emoji[..^1], .. emoji]);
        return sequences;
    }

    [Theory]
    [MemberData(nameof(BrokenSequences))]
    public void StreamedTextEqualsDecodeEvenForInvalidBytes(int[] ids)
    {
        var detokenizer = Tokenizer.CreateDetokenizer();
        string streamed = string.Concat(ids.Select(detokenizer.Add)) + detokenizer.Flush();

        Assert.Contains('\uFFFD', streamed);
        Assert.Equal(Tokenizer.Decode(ids), streamed);
    }
}
