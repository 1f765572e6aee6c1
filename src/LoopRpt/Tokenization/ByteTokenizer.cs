using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LoopRpt.Tokenization;

/// <summary>
/// The byte tokenizer: UTF-8 bytes are ids 0–255 and end-of-text is 256 (vocabulary 257). It needs no files, so it is
/// hosting's default; a model trained with it records <c>{"kind": "bytes", "vocab_size": 257, "eos_token_id": 256}</c>
/// in its <c>meta.json</c>, which <see cref="TextCodec.FromDescription"/> reads back.
/// </summary>
public static class ByteTokenizer
{
    /// <summary>The <c>kind</c> of its <c>meta.json</c> description.</summary>
    public const string Kind = "bytes";

    /// <summary>The end-of-text id.</summary>
    public const int EndOfTextId = 256;

    /// <summary>Ids lie in [0, 257).</summary>
    public const int VocabularySize = 257;

    /// <summary>The UTF-8 bytes of <paramref name="text"/> as ids.</summary>
    public static int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    /// <summary>The text of <paramref name="ids"/>; ids that are not bytes (end-of-text) are skipped.</summary>
    public static string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return Encoding.UTF8.GetString(ids.Where(i => i is >= 0 and < 256).Select(i => (byte)i).ToArray());
    }

    /// <summary>The description stored in a model's <c>meta.json</c>.</summary>
    public static JsonObject Describe() => new() { ["kind"] = Kind, ["vocab_size"] = VocabularySize, ["eos_token_id"] = EndOfTextId };

    /// <summary>Whether a <c>meta.json</c> tokenizer <paramref name="description"/> is this tokenizer's (<c>{"kind": "bytes"}</c>).</summary>
    public static bool Describes(JsonObject? description)
        => description?["kind"] is JsonValue kind && kind.GetValueKind() == JsonValueKind.String && (string?)kind == Kind;
}
