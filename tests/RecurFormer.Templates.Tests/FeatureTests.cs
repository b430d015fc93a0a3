using System.Text.Json;
using RecurFormer.Templates;

namespace RecurFormer.Templates.Tests;

/// <summary>
/// One small template per language feature (Golden/features.json, made by Golden/make_feature_goldens.py with Python
/// Jinja2 in transformers' configuration): our output must be identical, and where Jinja2 fails we must fail too.
/// </summary>
public class FeatureTests
{
    private static readonly string FeaturesFile = Path.Combine(AppContext.BaseDirectory, "Golden", "features.json");

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        using var document = JsonDocument.Parse(File.ReadAllText(FeaturesFile));
        foreach (var entry in document.RootElement.EnumerateArray())
        {
            data.Add(entry.GetProperty("name").GetString()!);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_python_jinja2(string name)
    {
        using var document = JsonDocument.Parse(File.ReadAllText(FeaturesFile));
        var entry = document.RootElement.EnumerateArray().Single(e => e.GetProperty("name").GetString() == name);
        var source = entry.GetProperty("template").GetString()!;
        var variables = entry.GetProperty("variables").EnumerateObject()
            .Select(p => new KeyValuePair<string, object?>(p.Name, p.Value.Clone())).ToList();

        if (entry.TryGetProperty("expected", out var expected))
        {
            Assert.Equal(expected.GetString(), Template.Parse(source, GoldenTests.PinnedClock).Render(variables));
        }
        else if (entry.TryGetProperty("raise_exception", out var message))
        {
            var raised = Assert.Throws<TemplateRaisedException>(() => Template.Parse(source, GoldenTests.PinnedClock).Render(variables));
            Assert.Equal(message.GetString(), raised.Reason);
        }
        else
        {
            // Jinja2 may reject the template when compiling it or when rendering; either way we must reject it too.
            var error = Assert.ThrowsAny<TemplateException>(() => Template.Parse(source, GoldenTests.PinnedClock).Render(variables));
            Assert.IsNotType<TemplateRaisedException>(error);
            Assert.True(error.Line > 0 && error.Column > 0, $"no position in: {error.Message}");
        }
    }
}
