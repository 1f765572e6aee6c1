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

/// <summary>The core <see cref="ByteTokenizer"/> as the retraining tokenizer: UTF-8 bytes are ids 0–255, end-of-text is 256. Needs no files.</summary>
public sealed class ByteTokenizerService : ITokenizerService
{
    /// <summary>The end-of-text id (<see cref="ByteTokenizer.EndOfTextId"/>).</summary>
    public const int EndOfText = ByteTokenizer.EndOfTextId;

    /// <inheritdoc/>
    public int VocabSize => ByteTokenizer.VocabularySize;

    /// <inheritdoc/>
    public int? EndOfTextId => EndOfText;

    /// <inheritdoc/>
    public int[] Encode(string text) => ByteTokenizer.Encode(text);

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids) => ByteTokenizer.Decode(ids);

    /// <inheritdoc/>
    public JsonObject Describe() => ByteTokenizer.Describe();
}

/// <summary>Hosting tokenizers as the core library's <see cref="TextCodec"/>.</summary>
public static class TokenizerServiceExtensions
{
    /// <summary>
    /// The codec of a hosting tokenizer: the core's own codec for <see cref="ByteTokenizerService"/> and
    /// <see cref="LoopRptTokenizerService"/> (so hosting encodes exactly as the CLI and the library do), else one over its
    /// functions with its end-of-text id (which also starts documents, <see cref="DocumentTokens"/>).
    /// </summary>
    public static TextCodec ToTextCodec(this ITokenizerService tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer switch
        {
            ByteTokenizerService => TextCodec.Bytes(),
            LoopRptTokenizerService t => t.Codec,
            _ => TextCodec.Create(tokenizer.Encode, tokenizer.Decode, null, tokenizer.EndOfTextId, $"{tokenizer.GetType().Name} ({tokenizer.VocabSize} tokens)"),
        };
    }
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

    /// <summary>The core codec of this tokenizer.</summary>
    public TextCodec Codec => TextCodec.From(_tokenizer);

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
