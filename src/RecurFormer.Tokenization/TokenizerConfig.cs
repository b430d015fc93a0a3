using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>
/// What the tokenizer needs from tokenizer_config.json (transformers' settings on top of the tokenizer files):
/// added tokens, BOS/EOS names, whether BOS is added, <c>add_prefix_space</c>, the chat template.
/// Every field is optional; a checkpoint without the file gets the defaults.
/// </summary>
internal sealed class TokenizerConfig
{
    public const string FileName = "tokenizer_config.json";

    public string? TokenizerClass { get; private init; }
    public bool? AddBosToken { get; private init; }
    public bool? AddPrefixSpace { get; private init; }
    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }
    public string? ChatTemplate { get; private init; }
    public List<AddedToken> AddedTokens { get; private init; } = [];

    public static TokenizerConfig Load(string folder)
    {
        string path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) return new TokenizerConfig();
        using var doc = JsonFile.Load(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new TokenizerLoadException(path, "expected a JSON object at the top level");
        return new TokenizerConfig
        {
            TokenizerClass = root.String("tokenizer_class"),
            AddBosToken = root.Boolean("add_bos_token"),
            AddPrefixSpace = root.Boolean("add_prefix_space"),
            BosToken = root.TokenContent("bos_token"),
            EosToken = root.TokenContent("eos_token"),
            ChatTemplate = ReadChatTemplate(root),
            AddedTokens = ReadAddedTokensDecoder(root, path),
        };
    }

    /// <summary>A single template string, or the "default" one of a list of named templates.</summary>
    private static string? ReadChatTemplate(JsonElement root) => root.Property("chat_template") switch
    {
        { ValueKind: JsonValueKind.String } value => value.GetString(),
        { ValueKind: JsonValueKind.Array } list => list.EnumerateArray()
            .Where(t => t.String("name") == "default").Select(t => t.String("template")).FirstOrDefault(),
        _ => null,
    };

    private static List<AddedToken> ReadAddedTokensDecoder(JsonElement root, string path)
    {
        var tokens = new List<AddedToken>();
        if (root.Property("added_tokens_decoder") is not { ValueKind: JsonValueKind.Object } decoder) return tokens;
        foreach (var entry in decoder.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, out int id) || id < 0)
                throw new TokenizerLoadException(path, $"added_tokens_decoder key '{entry.Name}' is not a token id");
            string content = entry.Value.String("content")
                ?? throw new TokenizerLoadException(path, $"added_tokens_decoder[{id}] has no \"content\"");
            tokens.Add(ReadAddedToken(entry.Value, id, content));
        }
        return tokens;
    }

    public static AddedToken ReadAddedToken(JsonElement token, int id, string content) => new(
        id,
        content,
        Special: token.Boolean("special") ?? false,
        LStrip: token.Boolean("lstrip") ?? false,
        RStrip: token.Boolean("rstrip") ?? false,
        SingleWord: token.Boolean("single_word") ?? false);
}
