using System.Text;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Matching;
using RecurFormer.Tokenization;

namespace RecurFormer.StructuredOutput.Tests;

/// <summary>The demo model's vocabulary, and random walks through a grammar's masks: what a model that samples anything allowed would write.</summary>
public static class Walks
{
    public static string RepositoryRoot { get; } = FindRoot();

    private static readonly Lazy<CheckpointTokenizer> LazyTokenizer = new(() => CheckpointTokenizer.FromPretrained(Path.Combine(RepositoryRoot, "models", "dotnet-docs-qwen2-16m")));
    private static readonly Lazy<TokenVocabulary> LazyVocabulary = new(() => TokenVocabulary.FromTokenizer(LazyTokenizer.Value));

    public static CheckpointTokenizer Tokenizer => LazyTokenizer.Value;

    public static TokenVocabulary DemoVocabulary => LazyVocabulary.Value;

    public static GrammarMatcher Matcher(GrammarDefinition definition, TokenVocabulary? vocabulary = null) =>
        new(Grammar.Compile(definition), vocabulary ?? DemoVocabulary);

    public static (string Text, bool Complete, int Tokens) Walk(GrammarMatcher matcher, int seed, int maxTokens = 200, double stopWhenPossible = 0.3) =>
        TestSupport.ConstrainedWalks.Walk(matcher, seed, maxTokens, stopWhenPossible);

    /// <summary>A vocabulary of the given strings (ids in order) for small exact tests.</summary>
    public static TokenVocabulary Vocabulary(params string[] tokens) =>
        new(tokens.Select(t => (byte[]?)Encoding.UTF8.GetBytes(t)).ToList(), new Dictionary<int, string>());

    public static HashSet<string> AllowedStrings(GrammarMatcher matcher, int state, TokenVocabulary vocabulary)
    {
        var mask = matcher.Allowed(state, int.MaxValue);
        var result = new HashSet<string>();
        for (var id = 0; id < vocabulary.Size; id++)
        {
            if ((mask[id >> 6] & (1UL << (id & 63))) != 0)
            {
                result.Add(Encoding.UTF8.GetString(vocabulary.Bytes(id) ?? []));
            }
        }
        return result;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RecurFormer.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("RecurFormer.sln not found");
    }
}
