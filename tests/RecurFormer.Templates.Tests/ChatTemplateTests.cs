using System.Text.Json;
using System.Text.Json.Nodes;
using RecurFormer.Templates;
using RecurFormer.Templates.ChatTemplates;

namespace RecurFormer.Templates.Tests;

/// <summary>Loading chat templates and special tokens from checkpoint folders, and rendering OpenAI-style messages.</summary>
public sealed class ChatTemplateTests : IDisposable
{
    private readonly string folder = Path.Combine(Path.GetTempPath(), "recurformer-templates-" + Guid.NewGuid().ToString("N"));

    public ChatTemplateTests() => Directory.CreateDirectory(folder);

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    private void Write(string file, string text) => File.WriteAllText(Path.Combine(folder, file), text);

    [Fact]
    public void Demo_model_chatml_template_renders_the_reference_prompt()
    {
        var template = ChatTemplateLoader.Load(Path.Combine(AppContext.BaseDirectory, "DemoModel"));
        var messages = Json("""
            [{"role":"system","content":"You are a concise assistant that explains .NET APIs."},
             {"role":"user","content":"Explain System.Threading.CancellationToken.Equals."}]
            """);
        var prompt = template.Render(messages, addGenerationPrompt: true);
        Assert.Equal(
            "<|im_start|>system\nYou are a concise assistant that explains .NET APIs.<|im_end|>\n<|im_start|>user\nExplain System.Threading.CancellationToken.Equals.<|im_end|>\n<|im_start|>assistant\n",
            prompt);
        // bos_token is null in its tokenizer_config.json, so (as in transformers) the template does not see it.
        Assert.False(template.SpecialTokens.ContainsKey("bos_token"));
        Assert.Equal("<|im_end|>", template.SpecialTokens["eos_token"]);
    }

    [Fact]
    public void Special_tokens_may_be_strings_objects_or_null()
    {
        Write("tokenizer_config.json", """
            {"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "unk_token": null, "pad_token": {"content": null},
             "additional_special_tokens": ["<a>", {"content": "<b>"}],
             "chat_template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token is defined }}|{{ pad_token is defined }}|{{ additional_special_tokens }}"}
            """);
        var template = ChatTemplateLoader.Load(folder);
        Assert.Equal("<s>|</s>|False|False|['<a>', '<b>']", template.Render(Json("[]")));
    }

    [Fact]
    public void Named_templates_use_tool_use_when_tools_are_given()
    {
        Write("tokenizer_config.json", """
            {"chat_template": [{"name": "default", "template": "plain"}, {"name": "tool_use", "template": "tools: {{ tools|length }}"}]}
            """);
        var template = ChatTemplateLoader.Load(folder);
        Assert.Equal("plain", template.Render(Json("[]")));
        Assert.Equal("plain", template.Render(Json("[]"), Json("[]")));
        Assert.Equal("tools: 1", template.Render(Json("[]"), Json("""[{"type": "function", "function": {"name": "f"}}]""")));
    }

    [Fact]
    public void Chat_template_jinja_and_json_files_take_precedence()
    {
        Write("tokenizer_config.json", """{"eos_token": "E", "chat_template": "from config"}""");
        Assert.Equal("from config", ChatTemplateLoader.Load(folder).Render(Json("[]")));
        Write("chat_template.json", """{"chat_template": "from json {{ eos_token }}"}""");
        Assert.Equal("from json E", ChatTemplateLoader.Load(folder).Render(Json("[]")));
        Write("chat_template.jinja", "from jinja {{ eos_token }}\n");
        Assert.Equal("from jinja E", ChatTemplateLoader.Load(folder).Render(Json("[]")));
    }

    [Fact]
    public void Parsed_templates_are_cached_per_checkpoint_and_reloaded_when_changed()
    {
        Write("tokenizer_config.json", """{"chat_template": "one"}""");
        var first = ChatTemplateLoader.Load(folder);
        Assert.Same(first, ChatTemplateLoader.Load(folder));
        Write("tokenizer_config.json", """{"chat_template": "two, longer"}""");
        var second = ChatTemplateLoader.Load(folder);
        Assert.NotSame(first, second);
        Assert.Equal("two, longer", second.Render(Json("[]")));
    }

    [Fact]
    public void A_checkpoint_without_a_template_gets_a_clear_exception()
    {
        Write("tokenizer_config.json", """{"eos_token": "</s>"}""");
        var error = Assert.Throws<ChatTemplateNotFoundException>(() => ChatTemplateLoader.Load(folder));
        Assert.Contains("has no chat template", error.Message);
        Directory.Delete(folder, true);
        Directory.CreateDirectory(folder);
        Assert.Throws<ChatTemplateNotFoundException>(() => ChatTemplateLoader.Load(folder));
    }

    [Fact]
    public void A_template_that_does_not_parse_reports_its_position()
    {
        Write("chat_template.jinja", "ok\n{% if x %}never closed");
        var error = Assert.Throws<TemplateException>(() => ChatTemplateLoader.Load(folder));
        Assert.Equal((2, 4), (error.Line, error.Column));
    }

    [Fact]
    public void Content_parts_reach_the_template_as_a_list()
    {
        var template = new ChatTemplate(new Dictionary<string, Template>
        {
            ["default"] = Template.Parse("{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}[{{ p.type }}:{{ p.text }}]{% endfor %}{% endif %}{% endfor %}"),
        }, new Dictionary<string, object?>());
        var messages = Json("""[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"}]""");
        Assert.Equal("[text:a][text:b]c", template.Render(messages));
    }

    [Fact]
    public void Json_nodes_and_clr_values_are_accepted_as_variables()
    {
        var template = new ChatTemplate(new Dictionary<string, Template>
        {
            ["default"] = Template.Parse("{{ messages[0].content }} {{ n + 1 }} {{ f }} {{ flag }} {{ d.k }} {{ tools }} {{ add_generation_prompt }} {{ documents }}"),
        }, new Dictionary<string, object?>());
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = JsonNode.Parse("""[{"role": "user", "content": "hi"}]"""),
            ["n"] = 41,
            ["f"] = 2.5f,
            ["flag"] = true,
            ["d"] = new Dictionary<string, object?> { ["k"] = "v" },
        };
        Assert.Equal("hi 42 2.5 True v None False None", template.RenderVariables(variables));
    }

    [Theory]
    [InlineData("""{"role": "user"}""", "'messages' must be a list")]
    [InlineData("""[{"content": "no role"}]""", "message 0 has no 'role'")]
    [InlineData("""["just text"]""", "message 0 must be an object")]
    public void Malformed_messages_are_rejected_clearly(string messages, string message)
    {
        var template = new ChatTemplate(new Dictionary<string, Template> { ["default"] = Template.Parse("x") }, new Dictionary<string, object?>());
        var error = Assert.Throws<ChatInputException>(() => template.Render(Json(messages)));
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void Content_of_any_json_type_reaches_the_template_as_transformers_passes_it()
    {
        // Tool results are often objects; templates such as Llama 3.1's write them with tojson.
        var template = new ChatTemplate(new Dictionary<string, Template>
        {
            ["default"] = Template.Parse("{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{{ m.content | tojson }}{% endif %};{% endfor %}"),
        }, new Dictionary<string, object?>());
        var rendered = template.Render(Json("""[{"role": "user", "content": "hi"}, {"role": "tool", "content": {"temperature": 21, "unit": "C"}}, {"role": "tool", "content": 5}]"""));
        Assert.Equal("hi;{\"temperature\": 21, \"unit\": \"C\"};5;", rendered);
    }

    [Fact]
    public void Integers_and_floats_from_json_print_as_python_prints_them()
    {
        var template = Template.Parse("{{ a }} {{ b }} {{ c }} {{ d }} {{ a / 2 }} {{ b|tojson }}");
        Assert.Equal("3 3.0 1e-07 -9223372036854775808 1.5 3.0", template.Render(Json("""{"a": 3, "b": 3.0, "c": 1e-7, "d": -9223372036854775808}""")));
        // Known difference: Python's integers are unbounded; beyond 64 bits ours become floats.
        Assert.Equal("1.2345678901234567e+19", Template.Parse("{{ d }}").Render(Json("""{"d": 12345678901234567890}""")));
    }
}
