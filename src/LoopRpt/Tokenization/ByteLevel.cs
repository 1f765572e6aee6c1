using System.Text.RegularExpressions;

namespace LoopRpt.Tokenization;

/// <summary>
/// GPT-2's byte-level alphabet: every byte maps to one printable character, so a BPE vocabulary over "characters"
/// covers every UTF-8 string without an unknown token (bytes 33–126, 161–172, 174–255 map to themselves, the other
/// 68 bytes to U+0100 onwards; a space becomes 'Ġ'). Microsoft.ML.Tokenizers' BpeTokenizer with <c>ByteLevel = true</c>
/// applies the same mapping, which is why a vocabulary trained here loads there.
/// </summary>
public static class ByteLevel
{
    /// <summary>GPT-2's pre-tokenization pattern (contractions, letters, digits, punctuation runs, whitespace).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] ByteToChar = BuildByteToChar();

    internal static readonly Regex Gpt2Regex = new(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    /// <summary>The alphabet character of byte <paramref name="b"/>.</summary>
    public static char Char(byte b) => ByteToChar[b];

    /// <summary>A pre-token's UTF-8 bytes as alphabet characters, one per byte.</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text.ToArray());
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>Splits text into GPT-2 pre-tokens.</summary>
    public static IEnumerable<string> PreTokenize(string text)
    {
        foreach (Match m in Gpt2Regex.Matches(text)) yield return m.Value;
    }
}
