using System.Diagnostics;
using RecurFormer.Templates;

namespace RecurFormer.Templates.Tests;

/// <summary>
/// Every bad input of issue 5: a clear <see cref="TemplateException"/> naming line and column, never a crash, a hang
/// or a stack overflow.
/// </summary>
public class BadInputTests
{
    private static TemplateException ParseFails(string source)
    {
        var error = Assert.ThrowsAny<TemplateException>(() => Template.Parse(source));
        Assert.IsNotType<TemplateRaisedException>(error);
        return error;
    }

    private static TemplateException RenderFails(string source, TemplateOptions? options = null, params (string, object?)[] variables)
    {
        var template = Template.Parse(source, options);
        var error = Assert.ThrowsAny<TemplateException>(() => template.Render(variables.Select(v => new KeyValuePair<string, object?>(v.Item1, v.Item2))));
        Assert.IsNotType<TemplateRaisedException>(error);
        return error;
    }

    private static void AssertAt(TemplateException error, int line, int column, string fragment)
    {
        Assert.Equal((line, column), (error.Line, error.Column));
        Assert.Contains(fragment, error.Reason);
        Assert.StartsWith($"line {line}, column {column}: ", error.Message);
    }

    [Theory]
    [InlineData("{% if true %}x", "'if' block opened here is never closed")]
    [InlineData("{% for x in y %}x", "'for' block opened here is never closed")]
    [InlineData("{% macro m() %}x", "'macro' block opened here is never closed")]
    [InlineData("{% set x %}x", "'set' block opened here is never closed")]
    [InlineData("{% filter upper %}x", "'filter' block opened here is never closed")]
    [InlineData("{% generation %}x", "'generation' block opened here is never closed")]
    public void Unclosed_blocks_are_reported_at_their_opening_tag(string source, string message)
    {
        AssertAt(ParseFails("ok\n  " + source), 2, 6, message);
    }

    [Fact]
    public void Unclosed_tags_and_expressions_and_comments()
    {
        AssertAt(ParseFails("a\n{{ x "), 2, 1, "never closed with }}");
        AssertAt(ParseFails("{% if x "), 1, 1, "never closed with %}");
        AssertAt(ParseFails("x {# note"), 1, 3, "missing end of comment");
        AssertAt(ParseFails("{{ 'abc }}"), 1, 4, "unterminated string");
        AssertAt(ParseFails("{% raw %}abc"), 1, 1, "raw block is never closed");
    }

    [Fact]
    public void Unknown_tags_filters_and_tests()
    {
        AssertAt(ParseFails("\n{% frobnicate %}"), 2, 4, "unknown tag 'frobnicate'");
        AssertAt(ParseFails("{% endif %}"), 1, 4, "unknown tag 'endif'");
        AssertAt(ParseFails("{{ x | nosuchfilter }}"), 1, 8, "no filter named 'nosuchfilter'");
        AssertAt(ParseFails("{{ x is nosuchtest }}"), 1, 9, "no test named 'nosuchtest'");
        AssertAt(ParseFails("{% if x %}{% for y in z %}{{ y|nosuch }}{% endfor %}{% endif %}"), 1, 32, "no filter named 'nosuch'");
        // Inside an if block or a conditional expression Jinja2 reports them only when they run.
        Assert.Equal("", Template.Parse("{% if false %}{{ x|nosuch }}{% endif %}{{ x|nosuch if false }}").Render([]));
        AssertAt(RenderFails("{% if x is nosuchtest %}{% endif %}"), 1, 9, "no test named 'nosuchtest'");
        AssertAt(ParseFails("{% include 'other.jinja' %}"), 1, 4, "'include' tag needs other template files");
        AssertAt(ParseFails("{% for x in xs %}{% endfor %}{% break %}"), 1, 33, "'break' outside of a for loop");
        AssertAt(ParseFails("{{ 1 + }}"), 1, 8, "unexpected end of print statement");
        AssertAt(ParseFails("{{ x y }}"), 1, 6, "expected end of print statement");
    }

    [Fact]
    public void Calling_a_non_callable()
    {
        AssertAt(RenderFails("{{ 'abc'() }}"), 1, 9, "'str' object is not callable");
        AssertAt(RenderFails("\n{{ messages() }}", null, ("messages", new List<object?>())), 2, 12, "'list' object is not callable");
        AssertAt(RenderFails("{{ nothing() }}"), 1, 11, "'nothing' is undefined");
    }

    [Fact]
    public void Undefined_in_operations_fails_but_not_in_tests_or_default()
    {
        AssertAt(RenderFails("{{ missing + 1 }}"), 1, 12, "'missing' is undefined");
        AssertAt(RenderFails("{{ missing.attr }}"), 1, 12, "'missing' is undefined");
        AssertAt(RenderFails("{{ m.content.strip() }}", null, ("m", new Dictionary<string, object?> { ["content"] = null })), 1, 19, "'None' has no attribute 'strip'");
        Assert.Equal("no|d|", Template.Parse("{{ 'yes' if missing is defined else 'no' }}|{{ missing|default('d') }}|{{ missing }}").Render([]));
    }

    [Fact]
    public void Wrong_argument_counts()
    {
        AssertAt(RenderFails("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}"), 1, 35, "macro 'f' takes not more than 1 argument(s)");
        AssertAt(RenderFails("{{ 'x'|upper(1) }}"), 1, 8, "takes 1 positional argument");
        AssertAt(RenderFails("{{ [1]|join(',', 'a', 'b') }}"), 1, 8, "join() takes at most 2 argument(s)");
        AssertAt(RenderFails("{{ 'x'|indent(nope=1) }}"), 1, 8, "unexpected keyword argument 'nope'");
        AssertAt(RenderFails("{{ 1 is divisibleby }}"), 1, 6, "takes exactly one argument");
        AssertAt(RenderFails("{{ range(1, 2, 3, 4) }}"), 1, 9, "range expected 1 to 3 arguments");
    }

    [Fact]
    public void Infinite_macro_recursion_stops_at_the_call_depth_limit()
    {
        var error = RenderFails("{% macro loop(n) %}{{ loop(n + 1) }}{% endmacro %}\n{{ loop(0) }}");
        Assert.Contains("macro calls nested more than 100 deep", error.Reason);
        Assert.True(error.Line >= 1);
    }

    [Fact]
    public void Mutual_recursion_through_call_blocks_also_stops()
    {
        var error = RenderFails("{% macro a() %}{{ caller is defined }}{% call a() %}x{% endcall %}{% endmacro %}{{ a() }}");
        Assert.Contains("infinite recursion", error.Reason);
    }

    [Theory]
    [InlineData(100_000)]
    [InlineData(1_000)]
    public void Very_deep_nesting_is_refused_without_overflowing_the_stack(int depth)
    {
        var parentheses = "{{ " + new string('(', depth) + "1" + new string(')', depth) + " }}";
        AssertAt(ParseFails(parentheses), 1, 4 + 100, "nests blocks or expressions more than 100 levels deep");
        var blocks = string.Concat(Enumerable.Repeat("{% if true %}", depth)) + string.Concat(Enumerable.Repeat("{% endif %}", depth));
        Assert.Contains("more than 100 levels deep", ParseFails(blocks).Reason);
        var lists = "{{ " + new string('[', depth) + new string(']', depth) + " }}";
        Assert.Contains("more than 100 levels deep", ParseFails(lists).Reason);
        var nots = "{{ " + string.Concat(Enumerable.Repeat("not ", depth)) + "x }}";
        Assert.Contains("more than 100 levels deep", ParseFails(nots).Reason);
        var minus = "{{ " + new string('-', depth) + "1 }}";
        Assert.Contains("more than 100 levels deep", ParseFails(minus).Reason);
    }

    [Fact]
    public void Nesting_within_the_limit_works()
    {
        Assert.Equal("1", Template.Parse("{{ " + new string('(', 90) + "1" + new string(')', 90) + " }}").Render([]));
    }

    [Fact]
    public void Huge_loops_stop_at_the_step_limit_quickly()
    {
        var watch = Stopwatch.StartNew();
        var source = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        var error = RenderFails("\n" + source);
        Assert.Contains("more than 2000000 steps", error.Reason);
        Assert.Equal(2, error.Line);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
        AssertAt(RenderFails("{{ range(100000000) }}"), 1, 9, "Range too big");
        var small = new TemplateOptions { MaxSteps = 50 };
        Assert.Contains("more than 50 steps", RenderFails("{% for x in range(100) %}{{ x }}{% endfor %}", small).Reason);
    }

    [Fact]
    public void Huge_strings_stop_at_the_output_limit()
    {
        var options = new TemplateOptions { MaxOutputLength = 1000 };
        Assert.Contains("longer than 1000", RenderFails("{{ 'x' * 5000 }}", options).Reason);
        Assert.Contains("beyond 1000", RenderFails("{% for i in range(2000) %}x{% endfor %}", options).Reason);
        Assert.Contains("longer than 1000", RenderFails("{% set ns = namespace(s='abcdefghij') %}{% for i in range(200) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", options).Reason);
    }

    [Fact]
    public void Raise_exception_is_its_own_exception_type_with_the_template_message()
    {
        var template = Template.Parse("ok\n{{ raise_exception('Only user and assistant roles are supported!') }}");
        var raised = Assert.Throws<TemplateRaisedException>(() => template.Render([]));
        Assert.Equal("Only user and assistant roles are supported!", raised.Reason);
        Assert.Equal((2, 19), (raised.Line, raised.Column));
    }

    [Fact]
    public void Sandbox_refuses_mutation_unless_allowed()
    {
        AssertAt(RenderFails("{% set xs = [1] %}{{ xs.append(2) }}"), 1, 31, "access to attribute 'append' of 'list' object is unsafe");
        var permissive = new TemplateOptions { AllowMutatingMethods = true };
        Assert.Equal("[1, 2]", Template.Parse("{% set xs = [1] %}{% set _ = xs.append(2) %}{{ xs }}", permissive).Render([]));
    }

    [Fact]
    public void Misplaced_unpacking_and_loop_calls_are_clear()
    {
        Assert.Contains("cannot follow **kwargs", ParseFails("{{ f(**d, x=1) }}").Reason);
        Assert.Contains("*args cannot follow **kwargs", ParseFails("{{ f(**d, *xs) }}").Reason);
        Assert.Contains("not recursive", RenderFails("{% for x in [1] %}{{ loop([2]) }}{% endfor %}").Message);
    }

    [Fact]
    public void Endless_recursive_loops_stop_at_the_call_depth_limit()
    {
        // A tree that contains itself: loop(...) recurses until the macro call limit, then fails with a position.
        var error = Assert.ThrowsAny<TemplateException>(() => Template.Parse("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}").Render([]));
        Assert.Contains("deep", error.Message);
        Assert.True(error.Line > 0);
    }
}
