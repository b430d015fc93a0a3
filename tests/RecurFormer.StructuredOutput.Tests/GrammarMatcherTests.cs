using System.Text;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.StructuredOutput.Tests;

/// <summary>The automaton and its masks on small vocabularies where every allowed token can be listed.</summary>
public sealed class GrammarMatcherTests
{
    private static readonly string[] Tokens = ["a", "b", "ab", "abc", "c", "{", "}", "x", "\"", "ba"];

    [Fact]
    public void Masks_AllowExactlyTheTokensWhoseBytesContinueTheGrammar()
    {
        var vocabulary = Walks.Vocabulary(Tokens);
        var matcher = Walks.Matcher(GrammarDefinition.Single(Node.Seq(Node.Literal("ab"), Node.Star(Node.Literal("c")))), vocabulary);
        Assert.Equal(["a", "ab", "abc"], Walks.AllowedStrings(matcher, matcher.Initial, vocabulary).Order());
        var afterA = matcher.Advance(matcher.Initial, Array.IndexOf(Tokens, "a"));
        Assert.Equal(["b"], Walks.AllowedStrings(matcher, afterA, vocabulary).Order());
        Assert.False(matcher.IsAccepting(afterA));
        var afterAbc = matcher.Advance(matcher.Initial, Array.IndexOf(Tokens, "abc"));
        Assert.True(matcher.IsAccepting(afterAbc));
        Assert.True(matcher.CanContinue(afterAbc)); // more c's may follow
        Assert.Equal(["c"], Walks.AllowedStrings(matcher, afterAbc, vocabulary));
        Assert.Equal(-1, matcher.Advance(matcher.Initial, Array.IndexOf(Tokens, "b")));
    }

    [Fact]
    public void Constraint_MustEndWhenNothingCanFollow_AndCanEndOnlyWhenComplete()
    {
        var vocabulary = Walks.Vocabulary(Tokens);
        var matcher = Walks.Matcher(OutputGrammars.Choice(["ab", "abc"]), vocabulary);
        var constraint = new GrammarConstraint(matcher, 10);
        Assert.False(constraint.CanEnd);
        constraint.Accept(Array.IndexOf(Tokens, "ab"));
        Assert.True(constraint.CanEnd);
        Assert.False(constraint.MustEnd); // "c" may still come
        constraint.Accept(Array.IndexOf(Tokens, "c"));
        Assert.True(constraint.MustEnd);
        Assert.Throws<InvalidOperationException>(() => new GrammarConstraint(matcher, 10).Accept(Array.IndexOf(Tokens, "x")));
    }

    [Fact]
    public void RecursiveRules_MatchNestedBrackets_AndTailCallsKeepLongListsFlat()
    {
        var vocabulary = Walks.Vocabulary(Tokens);
        var rules = new Dictionary<string, Node>
        {
            ["root"] = Node.Seq(Node.Literal("{"), Node.Star(new RuleNode("root")), Node.Literal("}")),
        };
        var matcher = Walks.Matcher(new GrammarDefinition(rules, "root"), vocabulary);
        var state = matcher.AdvanceBytes(matcher.Initial, "{{}{{}}"u8);
        Assert.True(state >= 0);
        Assert.False(matcher.IsAccepting(state));
        Assert.Equal(["{", "}"], Walks.AllowedStrings(matcher, state, vocabulary).Order());
        Assert.True(matcher.IsAccepting(matcher.AdvanceBytes(state, "}"u8)));
        Assert.Equal(-1, matcher.AdvanceBytes(matcher.Initial, "}"u8));

        // list ::= "a" list | "" : right recursion through a tail call, 10,000 deep without a stack.
        var list = new Dictionary<string, Node> { ["root"] = Node.Alt(Node.Seq(Node.Literal("a"), new RuleNode("root")), Node.Empty) };
        var lists = Walks.Matcher(new GrammarDefinition(list, "root"), vocabulary);
        Assert.True(lists.IsAccepting(lists.AdvanceBytes(lists.Initial, Encoding.ASCII.GetBytes(new string('a', 10_000)))));
    }

    [Fact]
    public void LeftRecursionAndEndlessRecursion_AreRefusedAtCompileTime()
    {
        var left = new Dictionary<string, Node> { ["root"] = Node.Alt(Node.Seq(new RuleNode("root"), Node.Literal("a")), Node.Literal("b")) };
        Assert.Contains("left-recursive", Assert.Throws<StructuredOutputException>(() => Grammar.Compile(new GrammarDefinition(left, "root"))).Message);
        var endless = new Dictionary<string, Node> { ["root"] = Node.Seq(Node.Literal("a"), new RuleNode("root")) };
        Assert.Contains("no finite output", Assert.Throws<StructuredOutputException>(() => Grammar.Compile(new GrammarDefinition(endless, "root"))).Message);
        var undefined = new Dictionary<string, Node> { ["root"] = new RuleNode("nowhere") };
        Assert.Contains("undefined rule 'nowhere'", Assert.Throws<StructuredOutputException>(() => Grammar.Compile(new GrammarDefinition(undefined, "root"))).Message);
    }

    [Fact]
    public void SpecialTokens_AreAllowedOnlyWhereTheGrammarNamesThem()
    {
        var tokens = new List<byte[]?> { "a"u8.ToArray(), "[TOOL_CALLS]"u8.ToArray(), "["u8.ToArray() };
        var vocabulary = new TokenVocabulary(tokens, new Dictionary<int, string> { [1] = "[TOOL_CALLS]" });
        Assert.True(vocabulary.TryGetSpecialToken("[TOOL_CALLS]", out var special));
        var matcher = Walks.Matcher(GrammarDefinition.Single(Node.Seq(new TokenNode(special), Node.Literal("a"))), vocabulary);
        Assert.Equal([special], Allowed(matcher, matcher.Initial));
        var after = matcher.Advance(matcher.Initial, special);
        Assert.Equal([0], Allowed(matcher, after));
        // Where the grammar wants plain text, the special token's spelling is not a way in.
        var text = Walks.Matcher(GrammarDefinition.Single(Node.Literal("[TOOL_CALLS]")), vocabulary);
        Assert.Equal([2], Allowed(text, text.Initial));
    }

    [Fact]
    public void NearTheTokenBudget_OnlyTokensAfterWhichTheOutputCanStillCloseAreAllowed()
    {
        var vocabulary = Walks.Vocabulary("\"", "ab", "abab", "a");
        var matcher = Walks.Matcher(GrammarDefinition.Single(Node.Seq(Node.Literal("\""), Node.Star(Node.Alt(Node.Literal("a"), Node.Literal("b"))), Node.Literal("\""))), vocabulary);
        var open = matcher.AdvanceBytes(matcher.Initial, "\""u8);
        Assert.Equal(4, CountAllowed(matcher.Allowed(open, 100)));
        // One token left after this one: it must be the closing quote, so only tokens after which 1 byte closes are fine (all of them).
        Assert.Equal(4, CountAllowed(matcher.Allowed(open, 1)));
        // No token after this one: only the quote itself.
        Assert.Equal([0], Allowed(matcher, open, 0));
    }

    [Fact]
    public void WhenNothingIsSureToFitTheBudget_TheTokensThatBringTheEndClosestAreAllowed()
    {
        // A forced literal longer than the budget: a model spelling it a byte per token would run out; the longest
        // piece is the only way to get closest to the end.
        var vocabulary = Walks.Vocabulary("x", "y", "z", "xy", "w");
        var matcher = Walks.Matcher(OutputGrammars.Choice(["xyz"]), vocabulary);
        Assert.Equal([0, 3], Allowed(matcher, matcher.Initial));
        Assert.Equal([0, 3], Allowed(matcher, matcher.Initial, tokensAfter: 2)); // x, y, z fit in three tokens
        Assert.Equal([3], Allowed(matcher, matcher.Initial, tokensAfter: 0)); // nothing fits in one: xy gets closest
    }

    [Fact]
    public void Warming_PreparesEveryReachableState_SoThatDecodingCreatesNone()
    {
        using var document = System.Text.Json.JsonDocument.Parse("""{"type":"object","properties":{"kind":{"enum":["a","b"]},"n":{"type":"integer","minimum":0,"maximum":99},"ok":{"type":"boolean"}},"required":["kind","n","ok"]}""");
        var matcher = Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement));
        var prepared = matcher.Warm(TimeSpan.FromMinutes(1));
        Assert.True(prepared > 10, $"{prepared} states");
        var states = matcher.StateCount;
        for (var seed = 0; seed < 20; seed++)
        {
            Assert.True(Walks.Walk(matcher, seed).Complete);
        }
        // Near the budget other masks are computed, but no parse state is new: the warm-up saw every one.
        Assert.Equal(states, matcher.StateCount);
    }

    private static int CountAllowed(ulong[] mask) => mask.Sum(w => System.Numerics.BitOperations.PopCount(w));

    private static List<int> Allowed(GrammarMatcher matcher, int state, int tokensAfter = int.MaxValue)
    {
        var mask = matcher.Allowed(state, tokensAfter);
        return Enumerable.Range(0, matcher.Vocabulary.Size).Where(id => (mask[id >> 6] & (1UL << (id & 63))) != 0).ToList();
    }
}
