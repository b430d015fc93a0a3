using System.Text.Json;
using RecurFormer.Templates;

namespace RecurFormer.Templates.Tests;

/// <summary>
/// Every real chat template in Golden/templates on every conversation in Golden/contexts, compared byte for byte with
/// what Python Jinja2 (configured as transformers configures it) produced: Golden/manifest.json and Golden/expected.
/// </summary>
public class GoldenTests
{
    private static readonly string GoldenDirectory = Path.Combine(AppContext.BaseDirectory, "Golden");

    /// <summary>The goldens were made with strftime_now pinned to this moment.</summary>
    public static readonly TemplateOptions PinnedClock = new() { Now = () => new DateTime(2024, 7, 26, 14, 5, 9) };

    private static readonly Dictionary<string, Template> Parsed = [];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var entry in Manifest().RootElement.EnumerateArray())
        {
            data.Add(entry.GetProperty("template").GetString()!, entry.GetProperty("context").GetString()!);
        }
        return data;
    }

    private static JsonDocument Manifest() => JsonDocument.Parse(File.ReadAllText(Path.Combine(GoldenDirectory, "manifest.json")));

    private static Template Load(string name)
    {
        lock (Parsed)
        {
            if (!Parsed.TryGetValue(name, out var template))
            {
                template = Template.Parse(File.ReadAllText(Path.Combine(GoldenDirectory, "templates", name + ".jinja")), PinnedClock);
                Parsed[name] = template;
            }
            return template;
        }
    }

    [Fact]
    public void The_goldens_cover_at_least_25_templates()
    {
        var templates = Manifest().RootElement.EnumerateArray().Select(e => e.GetProperty("template").GetString()).Distinct().Count();
        Assert.True(templates >= 25, $"only {templates} templates");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Renders_exactly_as_python_jinja2(string templateName, string contextName)
    {
        using var manifest = Manifest();
        var entry = manifest.RootElement.EnumerateArray()
            .Single(e => e.GetProperty("template").GetString() == templateName && e.GetProperty("context").GetString() == contextName);
        using var context = JsonDocument.Parse(File.ReadAllText(Path.Combine(GoldenDirectory, "contexts", contextName + ".json")));

        // Same merge as make_goldens.py: transformers' defaults, then the family's tokens, then the conversation.
        var variables = new Dictionary<string, object?> { ["tools"] = null, ["documents"] = null, ["add_generation_prompt"] = false };
        foreach (var token in entry.GetProperty("tokens").EnumerateObject())
        {
            variables[token.Name] = token.Value.Clone();
        }
        foreach (var member in context.RootElement.EnumerateObject())
        {
            variables[member.Name] = member.Value.Clone();
        }

        var template = Load(templateName);
        if (entry.TryGetProperty("expected", out var expectedFile))
        {
            var expected = File.ReadAllText(Path.Combine(GoldenDirectory, "expected", expectedFile.GetString()!));
            var actual = template.Render(variables);
            Assert.Equal(expected, actual);
        }
        else if (entry.TryGetProperty("raise_exception", out var message))
        {
            var error = Assert.Throws<TemplateRaisedException>(() => template.Render(variables));
            Assert.Equal(message.GetString(), error.Reason);
        }
        else
        {
            var error = Assert.ThrowsAny<TemplateException>(() => template.Render(variables));
            Assert.IsNotType<TemplateRaisedException>(error);
        }
    }
}
