namespace RecurFormer.Tokenization;

/// <summary>
/// The GPT-2 byte-level alphabet: every byte value is written as one printable character so that byte-level BPE
/// vocabularies can be stored as text (space becomes 'Ġ', newline 'Ċ'). Printable Latin-1 bytes map to themselves;
/// the remaining 68 bytes map, in order, to U+0100 onwards.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = BuildCharToByte(ByteToChar);

    public static char ToChar(byte value) => ByteToChar[value];

    /// <summary>
    /// The bytes a vocabulary token stands for. A character outside the alphabet (possible in hand-edited
    /// vocabularies) stands for its own UTF-8 bytes, which is what HuggingFace's ByteLevel decoder does too.
    /// </summary>
    public static byte[] TokenToBytes(string token)
    {
        var bytes = new List<byte>(token.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < token.Length; i++)
        {
            if (CharToByte.TryGetValue(token[i], out byte b))
            {
                bytes.Add(b);
                continue;
            }
            int length = char.IsSurrogatePair(token, i) ? 2 : 1;
            int written = System.Text.Encoding.UTF8.GetBytes(token.AsSpan(i, length), utf8);
            for (int k = 0; k < written; k++) bytes.Add(utf8[k]);
            i += length - 1;
        }
        return bytes.ToArray();
    }

    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    private static Dictionary<char, byte> BuildCharToByte(char[] byteToChar)
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) map[byteToChar[b]] = (byte)b;
        return map;
    }
}
