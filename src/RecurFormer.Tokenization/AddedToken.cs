namespace RecurFormer.Tokenization;

/// <summary>
/// A token added on top of the model vocabulary (HuggingFace <c>added_tokens</c>): matched as a whole in the text
/// before any pre-tokenization or BPE. <see cref="Special"/> tokens are the ones <c>skip_special_tokens</c> drops.
/// </summary>
/// <param name="LStrip">The token also swallows the whitespace on its left.</param>
/// <param name="RStrip">The token also swallows the whitespace on its right.</param>
/// <param name="SingleWord">The token only matches when it is not part of a longer word.</param>
public sealed record AddedToken(
    int Id,
    string Content,
    bool Special,
    bool LStrip = false,
    bool RStrip = false,
    bool SingleWord = false);
