using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.StructuredOutput.Tests;

/// <summary>guided_regex, guided_choice and guided_grammar: random walks match what .NET's regex engine (or the choice list) says.</summary>
public sealed class RegexAndGrammarTests
{
    [Theory]
    [InlineData(@"\d{3}-\d{4}")]
    [InlineData(@"(yes|no|maybe)")]
    [InlineData(@"[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8})?")]
    [InlineData(@"0x[0-9a-fA-F]+")]
    [InlineData(@"(\w+@\w+\.(com|org))")]
    [InlineData(@"[^\n]{0,20}!")]
    [InlineData(@"(ab|a)(bc|c)?")]
    [InlineData(@"héllo wörld \u00e9{2}")]
    public void RegexWalks_MatchTheWholeExpression(string pattern)
    {
        var matcher = Walks.Matcher(OutputGrammars.Regex(pattern));
        var check = new System.Text.RegularExpressions.Regex($"^(?:{pattern})$");
        for (var seed = 0; seed < 30; seed++)
        {
            var (text, complete, _) = Walks.Walk(matcher, seed, maxTokens: 60);
            Assert.True(complete, $"seed {seed}: {text}");
            Assert.Matches(check, text);
        }
    }

    [Theory]
    [InlineData(@"(?=a)b", "lookaround")]
    [InlineData(@"a\bb", "word boundaries")]
    [InlineData(@"a{5,2}", "below the minimum")]
    [InlineData(@"a{99999}", "repetition counts")]
    [InlineData(@"(ab", "missing ')'")]
    [InlineData(@"a)", "unexpected ')'")]
    [InlineData(@"\p{L}", "Unicode property")]
    public void UnsupportedRegexes_AreRefused(string pattern, string expected)
    {
        Assert.Contains(expected, Assert.Throws<StructuredOutputException>(() => OutputGrammars.Regex(pattern)).Message);
    }

    [Fact]
    public void AChoice_IsOneOfTheStrings()
    {
        string[] choices = ["positive", "negative", "neutral", "positive-ish"];
        var matcher = Walks.Matcher(OutputGrammars.Choice(choices));
        for (var seed = 0; seed < 30; seed++)
        {
            var (text, complete, _) = Walks.Walk(matcher, seed, stopWhenPossible: 0.5);
            Assert.True(complete);
            Assert.Contains(text, choices);
        }
    }

    [Fact]
    public void AGbnfGrammar_GeneratesItsLanguage()
    {
        const string grammar = """
            # arithmetic over small numbers
            root ::= expr
            expr ::= term (("+" | "-") term)*
            term ::= num | "(" expr ")"
            num  ::= [1-9] [0-9]{0,2}
            """;
        var matcher = Walks.Matcher(OutputGrammars.Gbnf(grammar));
        var check = new System.Text.RegularExpressions.Regex(@"^[0-9+\-()]+$");
        for (var seed = 0; seed < 30; seed++)
        {
            var (text, complete, _) = Walks.Walk(matcher, seed, maxTokens: 60);
            Assert.True(complete, text);
            Assert.Matches(check, text);
            Assert.Equal(text.Count(c => c == '('), text.Count(c => c == ')'));
        }
    }

    [Theory]
    [InlineData("expr ::= \"a\"", "no 'root' rule")]
    [InlineData("root ::= \"a\" undefined", "undefined rule 'undefined'")]
    [InlineData("root ::= root \"a\" | \"b\"", "left-recursive")]
    [InlineData("root ::= \"a", "unterminated string")]
    [InlineData("start: \"a\"", "expected '::='")]
    public void BadGrammars_AreRefused(string grammar, string expected)
    {
        Assert.Contains(expected, Assert.Throws<StructuredOutputException>(() => Grammar(grammar)).Message);
    }

    private static GrammarMatcher Grammar(string text) => Walks.Matcher(OutputGrammars.Gbnf(text));
}
