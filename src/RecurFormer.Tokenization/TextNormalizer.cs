using System.Text;

namespace RecurFormer.Tokenization;

/// <summary>
/// The Unicode normalizers HuggingFace tokenizers may declare (NFC, NFD, NFKC, NFKD), applied to plain text before
/// pre-tokenization. Note: with InvariantGlobalization (set for the whole solution) .NET has no Unicode data and
/// string.Normalize returns its input unchanged, so text that is not already in the declared form is encoded as is.
/// </summary>
internal sealed class TextNormalizer(IReadOnlyList<NormalizationForm> forms)
{
    public IReadOnlyList<NormalizationForm> Forms { get; } = forms;

    public string Apply(string text)
    {
        foreach (var form in Forms)
            if (!IsAscii(text)) text = text.Normalize(form);
        return text;
    }

    private static bool IsAscii(string text) => Ascii.IsValid(text);
}
