namespace RecurFormer.Tokenization.Tests;

/// <summary>The pre-tokenizer regexes behave in .NET as they do in HuggingFace tokenizers.</summary>
public class TextSplitterTests
{
    [Fact]
    public void Gpt2RegexKeepsLeadingSpacesWithWordsAndSplitsTrailingWhitespace()
    {
        var splitter = new TextSplitter([SplitRule.Isolated(TextSplitter.Gpt2Pattern)]);

        Assert.Equal(["Hello", ",", " world", "'s", " 123", "  ", " x", "\n"], splitter.Split("Hello, world's 123   x\n"));
    }

    [Fact]
    public void Qwen2RegexSplitsDigitsOneByOne()
    {
        var splitter = new TextSplitter([SplitRule.Isolated(TextSplitter.Qwen2Pattern)]);

        Assert.Equal(["abc", " ", "1", "2", "3", " .", "NET", "\n\n"], splitter.Split("abc 123 .NET\n\n"));
    }

    [Fact]
    public void TextBetweenMatchesIsKeptAsPieces()
    {
        var isolated = new TextSplitter([SplitRule.Isolated("-")]);
        var removed = new TextSplitter([new SplitRule(new System.Text.RegularExpressions.Regex("-"), keepMatches: false)]);

        Assert.Equal(["a", "-", "b", "-"], isolated.Split("a-b-"));
        Assert.Equal(["a", "b"], removed.Split("a-b-"));
    }
}
