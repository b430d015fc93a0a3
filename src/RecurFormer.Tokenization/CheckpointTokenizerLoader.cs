namespace RecurFormer.Tokenization;

/// <summary>BOS/EOS settings resolved from the checkpoint's config files.</summary>
/// <param name="BosToAdd">The id <see cref="CheckpointTokenizer.Encode(string)"/> puts first, or null when it adds none.</param>
internal sealed record CheckpointSpecialTokens(int? BosTokenId, IReadOnlyList<int> EosTokenIds, int? BosToAdd);

/// <summary>
/// Chooses which of a checkpoint's tokenizer files to read: tokenizer.json when it is byte-level BPE, else
/// tokenizer.model (SentencePiece), else vocab.json + merges.txt; then resolves BOS/EOS from the config files.
/// </summary>
internal static class CheckpointTokenizerLoader
{
    public static CheckpointTokenizer Load(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
            throw new TokenizerLoadException(folder, "the checkpoint folder does not exist");
        var config = TokenizerConfig.Load(folder);
        var parts = ReadTokenizerFiles(folder, config);
        var special = ResolveSpecialTokens(folder, config, parts);
        return new CheckpointTokenizer(parts, special, config.ChatTemplate);
    }

    private static TokenizerParts ReadTokenizerFiles(string folder, TokenizerConfig config)
    {
        string tokenizerJson = Path.Combine(folder, TokenizerJsonReader.FileName);
        string sentencePieceModel = Path.Combine(folder, SentencePieceModel.FileName);
        string vocabJson = Path.Combine(folder, VocabMergesReader.VocabFileName);
        string mergesTxt = Path.Combine(folder, VocabMergesReader.MergesFileName);

        if (File.Exists(tokenizerJson))
        {
            using var doc = JsonFile.Load(tokenizerJson);
            if (doc.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw new TokenizerLoadException(tokenizerJson, "expected a JSON object at the top level");
            if (TokenizerJsonReader.IsByteLevelBpe(doc.RootElement) || !File.Exists(sentencePieceModel))
                return TokenizerJsonReader.Read(tokenizerJson, doc.RootElement, config);
        }
        if (File.Exists(sentencePieceModel))
            return ReadSentencePiece(sentencePieceModel, config);
        if (File.Exists(vocabJson) || File.Exists(mergesTxt))
        {
            if (!File.Exists(mergesTxt)) throw new TokenizerLoadException(mergesTxt, "is missing (vocab.json needs merges.txt)");
            if (!File.Exists(vocabJson)) throw new TokenizerLoadException(vocabJson, "is missing (merges.txt needs vocab.json)");
            return VocabMergesReader.Read(folder, config);
        }
        throw new TokenizerLoadException(folder,
            "no tokenizer files (expected tokenizer.json, vocab.json + merges.txt, or tokenizer.model)");
    }

    private static TokenizerParts ReadSentencePiece(string path, TokenizerConfig config)
    {
        var model = new SentencePieceModel(path);
        // The model's control tokens are special even when tokenizer_config.json does not list them.
        var added = new Dictionary<int, AddedToken>();
        foreach (var (token, id) in model.ControlTokens()) added[id] = new AddedToken(id, token, Special: true);
        foreach (var token in config.AddedTokens) added[token.Id] = token;
        return new TokenizerParts(TokenizerKind.SentencePiece, path, model, added.Values.OrderBy(t => t.Id).ToList());
    }

    private static CheckpointSpecialTokens ResolveSpecialTokens(string folder, TokenizerConfig config, TokenizerParts parts)
    {
        var ids = new Dictionary<string, int>(parts.Model.Vocabulary, StringComparer.Ordinal);
        foreach (var token in parts.AddedTokens) ids[token.Content] = token.Id;
        string configPath = Path.Combine(folder, TokenizerConfig.FileName);

        int? IdOf(string? token, string what)
        {
            if (token is null) return null;
            return ids.TryGetValue(token, out int id) ? id
                : throw new TokenizerLoadException(configPath, $"{what} \"{token}\" is not in the vocabulary");
        }

        string? bosName = config.BosToken ?? (parts.Model as SentencePieceModel)?.BeginningOfSentenceToken;
        string? eosName = config.EosToken ?? (parts.Model as SentencePieceModel)?.EndOfSentenceToken;
        int? bosId = SpecialTokenSettings.ReadIds(folder, "bos_token_id") is [var b, ..] && b >= 0 ? b : IdOf(bosName, "bos_token");
        var eosIds = SpecialTokenSettings.ReadIds(folder, "eos_token_id")
            ?? (IdOf(eosName, "eos_token") is int e ? [e] : []);

        // BOS added by encoding: Llama-3's post-processor names it; otherwise add_bos_token decides
        // (transformers' Llama/SentencePiece tokenizers default to true, byte-level BPE ones to false).
        int? bosToAdd = null;
        if (parts.PostProcessorBosToken is { } postProcessorBos)
            bosToAdd = ids.TryGetValue(postProcessorBos, out int p) ? p
                : throw new TokenizerLoadException(parts.SourceFile, $"post_processor token \"{postProcessorBos}\" is not in the vocabulary");
        else if (config.AddBosToken ?? parts.Kind == TokenizerKind.SentencePiece)
            bosToAdd = IdOf(bosName, "bos_token")
                ?? throw new TokenizerLoadException(configPath, "add_bos_token is true but no bos_token is set");
        return new CheckpointSpecialTokens(bosId, eosIds.Distinct().ToList(), bosToAdd);
    }
}
