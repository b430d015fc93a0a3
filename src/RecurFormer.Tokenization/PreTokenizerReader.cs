using System.Text.Json;

namespace RecurFormer.Tokenization;

/// <summary>
/// Turns tokenizer.json's "pre_tokenizer" into regex split rules: ByteLevel (use_regex → the GPT-2 regex),
/// Split with a Regex or String pattern (behaviour Isolated or Removed), Digits, and Sequence of these.
/// </summary>
internal static class PreTokenizerReader
{
    public static (List<SplitRule> Rules, bool AddPrefixSpace) Read(string path, JsonElement? preTokenizer)
    {
        var rules = new List<SplitRule>();
        bool addPrefixSpace = false;
        if (preTokenizer is { } element) Add(path, element, rules, ref addPrefixSpace);
        return (rules, addPrefixSpace);
    }

    private static void Add(string path, JsonElement element, List<SplitRule> rules, ref bool addPrefixSpace)
    {
        switch (element.String("type"))
        {
            case "ByteLevel":
                addPrefixSpace |= element.Boolean("add_prefix_space") ?? false;
                if (element.Boolean("use_regex") ?? true) rules.Add(SplitRule.Isolated(TextSplitter.Gpt2Pattern));
                break;
            case "Split":
                rules.Add(ReadSplit(path, element));
                break;
            case "Digits":
                rules.Add(SplitRule.Isolated((element.Boolean("individual_digits") ?? false) ? @"\p{N}" : @"\p{N}+"));
                break;
            case "Sequence":
                foreach (var inner in element.Property("pretokenizers")?.EnumerateArray() ?? default)
                    Add(path, inner, rules, ref addPrefixSpace);
                break;
            case var other:
                throw new TokenizerLoadException(path, $"pre_tokenizer type '{other}' is not supported (ByteLevel, Split, Digits, Sequence)");
        }
    }

    private static SplitRule ReadSplit(string path, JsonElement split)
    {
        var patternElement = split.Property("pattern");
        string? pattern = patternElement?.String("Regex") ?? (patternElement?.String("String") is { } literal
            ? System.Text.RegularExpressions.Regex.Escape(literal) : null);
        if (pattern is null)
            throw new TokenizerLoadException(path, "Split pre-tokenizer has no pattern.Regex or pattern.String");
        if (split.Boolean("invert") == true)
            throw new TokenizerLoadException(path, "Split pre-tokenizer with invert=true is not supported");
        string behavior = split.String("behavior") ?? "Isolated";
        try
        {
            var regex = new System.Text.RegularExpressions.Regex(pattern,
                System.Text.RegularExpressions.RegexOptions.Compiled | System.Text.RegularExpressions.RegexOptions.CultureInvariant);
            return behavior switch
            {
                "Isolated" => new SplitRule(regex, keepMatches: true),
                "Removed" => new SplitRule(regex, keepMatches: false),
                _ => throw new TokenizerLoadException(path, $"Split pre-tokenizer behavior '{behavior}' is not supported (Isolated, Removed)"),
            };
        }
        catch (ArgumentException e)
        {
            throw new TokenizerLoadException(path, $"Split pre-tokenizer regex is not valid for .NET: {e.Message}", e);
        }
    }
}
