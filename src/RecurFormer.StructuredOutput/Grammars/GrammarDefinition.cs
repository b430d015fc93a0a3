namespace RecurFormer.StructuredOutput.Grammars;

/// <summary>Named rules and the one output starts with: what a front end hands to <see cref="Grammar.Compile(GrammarDefinition, int)"/>.</summary>
public sealed record GrammarDefinition(IReadOnlyDictionary<string, Node> Rules, string Root)
{
    public static GrammarDefinition Single(Node root) => new(new Dictionary<string, Node> { ["root"] = root }, "root");

    /// <summary>
    /// Adds this grammar's rules to <paramref name="rules"/> under <paramref name="prefix"/> (so that several grammars,
    /// e.g. one per tool, can live in one) and returns the call of its root. The shared JSON rules keep their names.
    /// </summary>
    public Node EmbedInto(IDictionary<string, Node> rules, string prefix)
    {
        string Rename(string name) => name.StartsWith("json_", StringComparison.Ordinal) ? name : prefix + name;
        foreach (var (name, body) in Rules)
        {
            rules[Rename(name)] = Rewrite(body, Rename);
        }
        return new RuleNode(Rename(Root));
    }

    private static Node Rewrite(Node node, Func<string, string> rename) => node switch
    {
        RuleNode r => new RuleNode(rename(r.Name)),
        SeqNode s => new SeqNode(s.Items.Select(i => Rewrite(i, rename)).ToArray()),
        AltNode a => new AltNode(a.Options.Select(o => Rewrite(o, rename)).ToArray()),
        RepeatNode r => r with { Item = Rewrite(r.Item, rename) },
        _ => node,
    };
}
