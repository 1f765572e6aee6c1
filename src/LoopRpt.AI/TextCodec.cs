using System.Text.Json.Nodes;
using LoopRpt.Hosting;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Tokenization;

namespace LoopRpt.AI;

/// <summary>
/// Text ↔ token ids of a served model, whatever tokenizer it carries: the LoopRpt tokenizer described in its
/// <c>meta.json</c>, a Hugging Face <c>tokenizer.json</c> (Ouro checkpoints), or a hosting
/// <see cref="ITokenizerService"/> (the byte tokenizer of retrained models).
/// </summary>
public sealed class TextCodec
{
    private readonly Func<string, IReadOnlyList<int>> _encode;
    private readonly Func<IEnumerable<int>, string> _decode;
    private readonly Func<string, int?> _tokenToId;

    private TextCodec(Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode, Func<string, int?> tokenToId,
        int? bos, int? eos, string description)
    {
        _encode = encode;
        _decode = decode;
        _tokenToId = tokenToId;
        BosTokenId = bos;
        EosTokenId = eos;
        Description = description;
    }

    /// <summary>The id that starts a document, if the tokenizer has one.</summary>
    public int? BosTokenId { get; }

    /// <summary>The end-of-text id, if any (generation stops there).</summary>
    public int? EosTokenId { get; }

    /// <summary>What the tokenizer is (for reports).</summary>
    public string Description { get; }

    /// <summary>Token ids of <paramref name="text"/> (no BOS/EOS added).</summary>
    public IReadOnlyList<int> Encode(string text) => _encode(text ?? throw new ArgumentNullException(nameof(text)));

    /// <summary>Text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => _decode(ids);

    /// <summary>The id of a token that is one vocabulary entry (e.g. <c>&lt;|im_start|&gt;</c>), or null.</summary>
    public int? TokenToId(string token) => _tokenToId(token);

    /// <summary>Wraps a LoopRpt tokenizer.</summary>
    public static TextCodec From(LoopRptTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new(s => tokenizer.Encode(s), tokenizer.Decode, t => SingleToken(t, s => tokenizer.Encode(s), tokenizer.Decode),
            tokenizer.BosTokenId, tokenizer.EosTokenId, $"{tokenizer.Spec.Kind} ({tokenizer.VocabularySize} tokens)");
    }

    /// <summary>Wraps a Hugging Face tokenizer.json with the config's special ids.</summary>
    public static TextCodec From(HfTokenizer tokenizer, OuroConfig config)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(config);
        return new(tokenizer.Encode, tokenizer.Decode, tokenizer.TokenToId, config.BosTokenId, config.EosTokenId,
            $"tokenizer.json ({tokenizer.VocabularySize} tokens)");
    }

    /// <summary>Wraps a hosting tokenizer (no BOS; its end-of-text id as EOS).</summary>
    public static TextCodec From(ITokenizerService tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new(tokenizer.Encode, tokenizer.Decode, t => SingleToken(t, tokenizer.Encode, tokenizer.Decode), null, tokenizer.EndOfTextId, $"{tokenizer.GetType().Name} ({tokenizer.VocabSize} tokens)");
    }

    /// <summary>
    /// The tokenizer a <c>meta.json</c> describes: <c>{"kind": "bytes"}</c> (hosting's byte tokenizer) or a LoopRpt
    /// <see cref="TokenizerSpec"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The description is neither.</exception>
    public static TextCodec FromDescription(JsonObject description)
    {
        ArgumentNullException.ThrowIfNull(description);
        if (description["kind"]?.GetValueKind() == System.Text.Json.JsonValueKind.String && (string?)description["kind"] == "bytes")
            return From(new ByteTokenizerService());
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(description.ToJsonString())));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException or NotSupportedException)
        {
            throw new InvalidDataException($"The model's tokenizer description is not one LoopRpt can rebuild: {e.Message}", e);
        }
    }

    /// <summary>The id when <paramref name="token"/> encodes to exactly one id that decodes back to it.</summary>
    private static int? SingleToken(string token, Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode)
    {
        var ids = encode(token);
        return ids.Count == 1 && decode(ids) == token ? ids[0] : null;
    }
}
