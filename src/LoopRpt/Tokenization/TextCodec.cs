using System.Text.Json.Nodes;
using LoopRpt.Interop;
using LoopRpt.Model;

namespace LoopRpt.Tokenization;

/// <summary>
/// Text ↔ token ids of a model, whatever tokenizer it carries: the LoopRpt tokenizer described in its <c>meta.json</c>,
/// hosting's byte tokenizer (<see cref="ByteTokenizer"/>), a Hugging Face <c>tokenizer.json</c> (Ouro checkpoints), or any
/// other pair of functions (<see cref="Create"/>). The one codec of the CLI, hosting, the Microsoft.Extensions.AI surface
/// and the server; start and end-of-text ids follow <see cref="DocumentTokens"/>.
/// </summary>
public sealed class TextCodec
{
    private readonly Func<string, IReadOnlyList<int>> _encode;
    private readonly Func<IEnumerable<int>, string> _decode;
    private readonly Func<string, int?> _tokenToId;

    private TextCodec(Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode, Func<string, int?>? tokenToId,
                      int? bos, int? eos, string description)
    {
        _encode = encode;
        _decode = decode;
        _tokenToId = tokenToId ?? (t => SingleToken(t, encode, decode));
        BosTokenId = DocumentTokens.StartId(bos, eos);
        EosTokenId = eos;
        Description = description;
    }

    /// <summary>
    /// The id that starts a prompt or document (prepended so its first token is scored): the tokenizer's BOS, else its
    /// end-of-text id (<see cref="DocumentTokens.StartId"/>); null when it has neither.
    /// </summary>
    public int? BosTokenId { get; }

    /// <summary>The end-of-text id, if any (generation stops there; training joins documents with it).</summary>
    public int? EosTokenId { get; }

    /// <summary>What the tokenizer is (for reports).</summary>
    public string Description { get; }

    /// <summary>Token ids of <paramref name="text"/>, with the start id first when <paramref name="addBos"/> and one exists (no EOS added).</summary>
    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        return DocumentTokens.Prompt(_encode(text), addBos ? BosTokenId : null);
    }

    /// <summary>A prompt or scored document: <c>[start] + ids</c> (<see cref="DocumentTokens.Prompt"/>).</summary>
    public int[] EncodePrompt(string text) => Encode(text, addBos: true);

    /// <summary>Appends one training document to <paramref name="stream"/> as <see cref="DocumentTokens.Append"/> joins them.</summary>
    public void AppendDocument(List<int> stream, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        DocumentTokens.Append(stream, _encode(text), BosTokenId, EosTokenId);
    }

    /// <summary>Text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => _decode(ids ?? throw new ArgumentNullException(nameof(ids)));

    /// <summary>The id of a token that is one vocabulary entry (e.g. <c>&lt;|im_start|&gt;</c>), or null.</summary>
    public int? TokenToId(string token) => _tokenToId(token);

    /// <summary>
    /// A codec of any tokenizer given as functions. <paramref name="tokenToId"/> null: a token's id is found by encoding it
    /// (when it encodes to exactly one id that decodes back to it).
    /// </summary>
    public static TextCodec Create(Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode, int? bosTokenId, int? eosTokenId,
                                   string description, Func<string, int?>? tokenToId = null)
    {
        ArgumentNullException.ThrowIfNull(encode);
        ArgumentNullException.ThrowIfNull(decode);
        ArgumentNullException.ThrowIfNull(description);
        return new(encode, decode, tokenToId, bosTokenId, eosTokenId, description);
    }

    /// <summary>Wraps a LoopRpt tokenizer.</summary>
    public static TextCodec From(LoopRptTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new(s => tokenizer.Encode(s), tokenizer.Decode, null, tokenizer.BosTokenId, tokenizer.EosTokenId,
            $"{tokenizer.Spec.Kind} ({tokenizer.VocabularySize} tokens)");
    }

    /// <summary>Wraps a Hugging Face tokenizer.json with the config's special ids.</summary>
    public static TextCodec From(HfTokenizer tokenizer, OuroConfig config)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(config);
        return new(tokenizer.Encode, tokenizer.Decode, tokenizer.TokenToId, config.BosTokenId, config.EosTokenId,
            $"tokenizer.json ({tokenizer.VocabularySize} tokens)");
    }

    /// <summary>The byte tokenizer (<see cref="ByteTokenizer"/>): no BOS, end-of-text 256, which also starts documents.</summary>
    public static TextCodec Bytes()
        => new(ByteTokenizer.Encode, ByteTokenizer.Decode, null, null, ByteTokenizer.EndOfTextId, $"{ByteTokenizer.Kind} ({ByteTokenizer.VocabularySize} tokens)");

    /// <summary>
    /// The tokenizer a <c>meta.json</c> describes, of any kind the library writes: the byte tokenizer
    /// (<c>{"kind": "bytes"}</c>, <see cref="ByteTokenizer"/>) or a LoopRpt tokenizer (a <see cref="TokenizerSpec"/>:
    /// trained BPE, tiktoken, BPE files, SentencePiece).
    /// </summary>
    /// <exception cref="InvalidDataException">The description is not one LoopRpt can rebuild.</exception>
    public static TextCodec FromDescription(JsonObject description)
    {
        ArgumentNullException.ThrowIfNull(description);
        if (ByteTokenizer.Describes(description)) return Bytes();
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(description.ToJsonString())));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException or NotSupportedException or KeyNotFoundException or InvalidOperationException)
        {
            throw new InvalidDataException($"The model's tokenizer description is not one LoopRpt can rebuild: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads <paramref name="path"/> as a LoopRpt tokenizer file (a <see cref="TokenizerSpec"/>, written by <c>looprpt tokenizer</c>)
    /// or, failing that, as a Hugging Face <c>tokenizer.json</c> whose special ids come from <paramref name="config"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is neither.</exception>
    public static TextCodec Load(string path, OuroConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(File.ReadAllText(path))));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException or KeyNotFoundException or InvalidOperationException)
        {
            try
            {
                return From(HfTokenizer.Load(path), config);
            }
            catch (InvalidDataException hf)
            {
                throw new InvalidDataException($"'{path}' is neither a LoopRpt tokenizer file ({e.Message}) nor a supported tokenizer.json ({hf.Message}).", hf);
            }
        }
    }

    /// <summary>The id when <paramref name="token"/> encodes to exactly one id that decodes back to it.</summary>
    private static int? SingleToken(string token, Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode)
    {
        var ids = encode(token);
        return ids.Count == 1 && decode(ids) == token ? ids[0] : null;
    }
}
