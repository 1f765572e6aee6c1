using System.Text;
using System.Text.Json.Nodes;
using LoopRpt.Tokenization;

namespace LoopRpt.Hosting;

/// <summary>
/// Text → token ids for retraining data and scoring requests. The default is <see cref="ByteTokenizerService"/>;
/// register another implementation (a trained BPE) with <see cref="LoopRptHostingBuilder.UseTokenizer"/>.
/// </summary>
public interface ITokenizerService
{
    /// <summary>Ids produced lie in [0, VocabSize).</summary>
    int VocabSize { get; }

    /// <summary>The id appended after each document of the training data, if any.</summary>
    int? EndOfTextId { get; }

    /// <summary>Token ids of <paramref name="text"/> (no end-of-text id appended).</summary>
    int[] Encode(string text);

    /// <summary>Text of <paramref name="ids"/> (ids without text are skipped).</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>Description stored in a model's <c>meta.json</c> (<c>tokenizer</c>).</summary>
    JsonObject Describe();
}

/// <summary>Byte-level tokenizer: UTF-8 bytes are ids 0–255, end-of-text is 256 (vocabulary 257). Needs no files.</summary>
public sealed class ByteTokenizerService : ITokenizerService
{
    public const int EndOfText = 256;

    public int VocabSize => 257;

    public int? EndOfTextId => EndOfText;

    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    public string Decode(IEnumerable<int> ids)
        => Encoding.UTF8.GetString(ids.Where(i => i is >= 0 and < 256).Select(i => (byte)i).ToArray());

    public JsonObject Describe() => new() { ["kind"] = "bytes", ["vocab_size"] = VocabSize, ["eos_token_id"] = EndOfText };

    /// <summary>Whether a model's <c>meta.json</c> tokenizer <paramref name="description"/> is this tokenizer's (<c>{"kind": "bytes"}</c>).</summary>
    public static bool Describes(JsonObject? description)
        => description?["kind"] is JsonValue kind && kind.GetValueKind() == System.Text.Json.JsonValueKind.String && (string?)kind == "bytes";
}

/// <summary>Hosting tokenizers as the core library's <see cref="TextCodec"/>.</summary>
public static class TokenizerServiceExtensions
{
    /// <summary>The codec of a hosting tokenizer (no BOS; its end-of-text id as EOS).</summary>
    public static TextCodec ToTextCodec(this ITokenizerService tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return TextCodec.Create(tokenizer.Encode, tokenizer.Decode, null, tokenizer.EndOfTextId, $"{tokenizer.GetType().Name} ({tokenizer.VocabSize} tokens)");
    }

    /// <summary>
    /// The tokenizer a <c>meta.json</c> describes: hosting's byte tokenizer (<see cref="ByteTokenizerService.Describes"/>) or a
    /// LoopRpt <see cref="TokenizerSpec"/> (<see cref="TextCodec.FromDescription"/>).
    /// </summary>
    /// <exception cref="InvalidDataException">The description is neither.</exception>
    public static TextCodec CodecOf(JsonObject description)
        => ByteTokenizerService.Describes(description) ? new ByteTokenizerService().ToTextCodec() : TextCodec.FromDescription(description);
}

/// <summary>
/// A <see cref="LoopRpt.Tokenization.LoopRptTokenizer"/> (a trained byte-level BPE, tiktoken, ...) as the retraining
/// tokenizer. End-of-text is the tokenizer's EOS id, else its BOS id (GPT-2 style tokenizers use one id for both).
/// </summary>
public sealed class LoopRptTokenizerService : ITokenizerService
{
    private readonly LoopRpt.Tokenization.LoopRptTokenizer _tokenizer;

    public LoopRptTokenizerService(LoopRpt.Tokenization.LoopRptTokenizer tokenizer)
        => _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));

    /// <summary>Rebuilds the tokenizer a LoopRpt model was trained with from its <c>meta.json</c> description.</summary>
    public static LoopRptTokenizerService FromDescription(JsonObject description)
        => new(LoopRpt.Tokenization.LoopRptTokenizer.Create(LoopRpt.Tokenization.TokenizerSpec.FromJson(description.ToJsonString())));

    public int VocabSize => _tokenizer.VocabularySize;

    public int? EndOfTextId => _tokenizer.EosTokenId ?? _tokenizer.BosTokenId;

    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _tokenizer.Encode(text);
    }

    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids);

    public JsonObject Describe() => _tokenizer.Spec.ToJsonObject();
}
