namespace RecurFormer.Tokenization;

/// <summary>The kind of tokenizer a checkpoint has, and so which file it was loaded from.</summary>
public enum TokenizerKind
{
    /// <summary>Byte-level BPE from tokenizer.json.</summary>
    ByteLevelBpeTokenizerJson,

    /// <summary>Byte-level BPE from vocab.json + merges.txt.</summary>
    ByteLevelBpeVocabMerges,

    /// <summary>SentencePiece from tokenizer.model.</summary>
    SentencePiece,
}
