namespace RecurFormer.Tokenization;

/// <summary>What a tokenizer file reader produces, before the checkpoint-wide settings are applied.</summary>
/// <param name="PostProcessorBosToken">The token a tokenizer.json post-processor puts before every text (Llama-3's BOS), if any.</param>
internal sealed record TokenizerParts(
    TokenizerKind Kind,
    string SourceFile,
    ITokenModel Model,
    IReadOnlyList<AddedToken> AddedTokens,
    string? PostProcessorBosToken = null);
