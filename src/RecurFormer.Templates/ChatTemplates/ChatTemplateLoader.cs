using System.Collections.Concurrent;
using System.Text.Json;

namespace RecurFormer.Templates.ChatTemplates;

/// <summary>
/// Finds a checkpoint's chat template the way transformers does: <c>chat_template.jinja</c>, else
/// <c>chat_template.json</c>, else <c>chat_template</c> in <c>tokenizer_config.json</c> (a string, or a list of
/// <c>{name, template}</c>). Special tokens come from <c>tokenizer_config.json</c>, where each may be a string, an
/// object with a <c>content</c> member, or null. Parsed templates are cached per checkpoint folder and reloaded when
/// one of those files changes.
/// </summary>
public static class ChatTemplateLoader
{
    private static readonly ConcurrentDictionary<string, (string Stamp, ChatTemplate Template)> Cache = new(StringComparer.Ordinal);

    private static readonly string[] SourceFiles = ["chat_template.jinja", "chat_template.json", "tokenizer_config.json"];

    /// <exception cref="ChatTemplateNotFoundException">No template in the checkpoint.</exception>
    /// <exception cref="TemplateException">A template that does not parse.</exception>
    public static ChatTemplate Load(string checkpointDirectory, TemplateOptions? options = null)
    {
        var directory = Path.GetFullPath(checkpointDirectory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"checkpoint folder not found: {checkpointDirectory}");
        }
        var stamp = string.Join("|", SourceFiles.Select(f => Path.Combine(directory, f))
            .Select(p => File.Exists(p) ? $"{File.GetLastWriteTimeUtc(p).Ticks}:{new FileInfo(p).Length}" : "-"));
        var key = directory + "\n" + (options is null ? "" : options.GetHashCode().ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (Cache.TryGetValue(key, out var cached) && cached.Stamp == stamp)
        {
            return cached.Template;
        }
        var template = LoadUncached(directory, options);
        Cache[key] = (stamp, template);
        return template;
    }

    /// <summary>
    /// A template given instead of the checkpoint's (vLLM's <c>--chat-template</c>): the text itself, or a file holding it;
    /// the special tokens still come from the checkpoint.
    /// </summary>
    /// <exception cref="TemplateException">A template that does not parse.</exception>
    public static ChatTemplate FromSource(string source, string checkpointDirectory, TemplateOptions? options = null)
    {
        var configPath = Path.Combine(Path.GetFullPath(checkpointDirectory), "tokenizer_config.json");
        using var config = File.Exists(configPath) ? ParseJson(configPath) : null;
        var templates = new Dictionary<string, Template>(StringComparer.Ordinal) { ["default"] = Template.Parse(source, options) };
        return new ChatTemplate(templates, config is null ? new Dictionary<string, object?>() : SpecialTokens(config.RootElement));
    }

    private static ChatTemplate LoadUncached(string directory, TemplateOptions? options)
    {
        JsonDocument? config = null;
        var configPath = Path.Combine(directory, "tokenizer_config.json");
        try
        {
            if (File.Exists(configPath))
            {
                config = ParseJson(configPath);
            }
            var sources = FindSources(directory, config);
            if (sources.Count == 0)
            {
                throw new ChatTemplateNotFoundException(
                    $"the checkpoint in {directory} has no chat template (no chat_template.jinja, chat_template.json or chat_template in tokenizer_config.json); use the completions endpoint or give a template");
            }
            var templates = new Dictionary<string, Template>(StringComparer.Ordinal);
            foreach (var (name, source) in sources)
            {
                templates[name] = Template.Parse(source, options);
            }
            return new ChatTemplate(templates, config is null ? new Dictionary<string, object?>() : SpecialTokens(config.RootElement));
        }
        finally
        {
            config?.Dispose();
        }
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException error)
        {
            throw new ChatTemplateNotFoundException($"{path} is not valid JSON: {error.Message}");
        }
    }

    private static List<(string Name, string Source)> FindSources(string directory, JsonDocument? config)
    {
        var jinjaPath = Path.Combine(directory, "chat_template.jinja");
        if (File.Exists(jinjaPath))
        {
            return [("default", File.ReadAllText(jinjaPath))];
        }
        var jsonPath = Path.Combine(directory, "chat_template.json");
        if (File.Exists(jsonPath))
        {
            using var document = ParseJson(jsonPath);
            var element = document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("chat_template", out var inner)
                ? inner
                : document.RootElement;
            var fromJson = FromChatTemplateValue(element);
            if (fromJson.Count > 0)
            {
                return fromJson;
            }
        }
        if (config is not null && config.RootElement.ValueKind == JsonValueKind.Object
            && config.RootElement.TryGetProperty("chat_template", out var value))
        {
            return FromChatTemplateValue(value);
        }
        return [];
    }

    /// <summary>A string is the default template; a list holds <c>{"name": …, "template": …}</c> entries.</summary>
    private static List<(string, string)> FromChatTemplateValue(JsonElement value)
    {
        var result = new List<(string, string)>();
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                result.Add(("default", value.GetString()!));
                break;
            case JsonValueKind.Array:
                foreach (var entry in value.EnumerateArray())
                {
                    if (entry.ValueKind == JsonValueKind.Object
                        && entry.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String
                        && entry.TryGetProperty("template", out var template) && template.ValueKind == JsonValueKind.String)
                    {
                        result.Add((name.GetString()!, template.GetString()!));
                    }
                }
                break;
            case JsonValueKind.Object:
                foreach (var property in value.EnumerateObject())
                {
                    if (property.Value.ValueKind == JsonValueKind.String)
                    {
                        result.Add((property.Name, property.Value.GetString()!));
                    }
                }
                break;
        }
        return result;
    }

    /// <summary>
    /// transformers passes its special_tokens_map to the template: bos, eos, unk, sep, pad, cls and mask tokens that
    /// are set, and additional_special_tokens. A token object counts by its <c>content</c>.
    /// </summary>
    public static Dictionary<string, object?> SpecialTokens(JsonElement config)
    {
        var tokens = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (config.ValueKind != JsonValueKind.Object)
        {
            return tokens;
        }
        foreach (var name in new[] { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" })
        {
            if (config.TryGetProperty(name, out var value) && TokenContent(value) is { } content)
            {
                tokens[name] = content;
            }
        }
        if (config.TryGetProperty("additional_special_tokens", out var additional) && additional.ValueKind == JsonValueKind.Array)
        {
            tokens["additional_special_tokens"] = additional.EnumerateArray().Select(TokenContent).Where(t => t is not null).Cast<object?>().ToList();
        }
        return tokens;
    }

    private static string? TokenContent(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Object when value.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String => content.GetString(),
        _ => null,
    };
}
