using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tokenization;
using Microsoft.Extensions.AI;

namespace LoopRpt.AI;

/// <summary>Options of <see cref="LoopRptEmbeddingGenerator"/>.</summary>
public sealed class LoopRptEmbeddingGeneratorOptions
{
    /// <summary>
    /// Exit threshold q in [0, 1] when a request does not set <see cref="LoopRptChatClient.ExitThresholdKey"/> in
    /// <c>EmbeddingGenerationOptions.AdditionalProperties</c>. Null (default): the config's <c>early_exit_threshold</c>, else full depth.
    /// </summary>
    public double? ExitThreshold { get; set; }

    /// <summary>Pooling over tokens. Default <see cref="EmbeddingPooling.Mean"/>.</summary>
    public EmbeddingPooling Pooling { get; set; } = ExitStateEmbedderOptions.Defaults.Pooling;

    /// <summary>Scale vectors to unit L2 norm. Default true.</summary>
    public bool Normalize { get; set; } = ExitStateEmbedderOptions.Defaults.Normalize;

    /// <summary>Texts per forward pass (at least 1). Default 16.</summary>
    public int BatchSize { get; set; } = ExitStateEmbedderOptions.Defaults.BatchSize;

    /// <summary>Prepend the tokenizer's BOS id (when it has one), as for scoring. Default true.</summary>
    public bool AddBos { get; set; } = true;

    internal LoopRptEmbeddingGeneratorOptions Clone() => (LoopRptEmbeddingGeneratorOptions)MemberwiseClone();

    internal void Validate(string paramName)
    {
        if (ExitThreshold is { } q && !(q is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException(paramName, q, "ExitThreshold must lie in [0, 1].");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(paramName, BatchSize, "BatchSize must be at least 1.");
    }
}

/// <summary>
/// An <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> of pooled exit states (<see cref="ExitStateEmbedder"/>):
/// each text is tokenized (BOS first when the tokenizer has one), runs its loops with adaptive exit, and its vector is
/// the mean of its tokens' final-normed exit states scaled to unit L2 norm (by default), hidden_size floats. Texts
/// longer than the model's context keep their start. Every call is batched and uses one model version.
/// </summary>
/// <remarks>
/// <c>GeneratedEmbeddings.Usage.InputTokenCount</c> counts the tokens read; <c>AdditionalCounts[<see cref="LoopRptChatClient.LoopsKey"/>]</c>
/// the loops spent; <c>AdditionalProperties[<see cref="LoopRptChatClient.ModelVersionKey"/>]</c> names the model version.
/// <c>EmbeddingGenerationOptions.Dimensions</c>, when set, must equal the model's hidden size;
/// <c>AdditionalProperties[<see cref="LoopRptChatClient.ExitThresholdKey"/>]</c> sets the request's exit threshold q.
/// </remarks>
public sealed class LoopRptEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly HeldSource _source;
    private readonly LoopRptEmbeddingGeneratorOptions _options;

    /// <summary>Creates a generator over <paramref name="source"/>'s model.</summary>
    public LoopRptEmbeddingGenerator(ILoopRptModelSource source, LoopRptEmbeddingGeneratorOptions? options = null, bool ownsSource = false)
    {
        _source = new HeldSource(source, ownsSource);
        _options = (options ?? new LoopRptEmbeddingGeneratorOptions()).Clone();
        _options.Validate(nameof(options));
        Metadata = new EmbeddingGeneratorMetadata("looprpt", null, source.ModelId);
    }

    /// <summary>Provider "looprpt" and the source's model id.</summary>
    public EmbeddingGeneratorMetadata Metadata { get; }

    /// <inheritdoc/>
    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        var texts = values.ToList();
        double? q = LoopRptChatClient.ExitThreshold(options?.AdditionalProperties) ?? _options.ExitThreshold;
        return Task.Run(() => Generate(texts, q, options?.Dimensions, cancellationToken), cancellationToken);
    }

    /// <summary>Embeds <paramref name="texts"/> synchronously with one model lease.</summary>
    private GeneratedEmbeddings<Embedding<float>> Generate(IReadOnlyList<string> texts, double? q, int? dimensions, CancellationToken cancellationToken)
    {
        for (int i = 0; i < texts.Count; i++)
            if (string.IsNullOrEmpty(texts[i]))
                throw new ArgumentException($"Input {i} is empty; every text to embed must hold at least one character.", "values");
        var result = new GeneratedEmbeddings<Embedding<float>>();
        if (texts.Count == 0) return result;
        using var lease = _source.Source.Acquire();
        var config = lease.Model.Config;
        if (dimensions is { } d && d != config.HiddenSize)
            throw new ArgumentOutOfRangeException("options", d, $"This model's embeddings have {config.HiddenSize} dimensions (its hidden size); Dimensions must be {config.HiddenSize} or unset.");
        var sequences = texts.Select(t => (IReadOnlyList<long>)Tokenize(t, lease.Codec, config.MaxPositionEmbeddings)).ToList();
        var embedder = new ExitStateEmbedder(lease.Model, new ExitStateEmbedderOptions
        {
            Exit = q is { } x ? ExitMode.Q(x) : null, Pooling = _options.Pooling, Normalize = _options.Normalize, BatchSize = _options.BatchSize,
        });
        var pooled = embedder.Embed(sequences, cancellationToken);
        var created = DateTimeOffset.UtcNow;
        foreach (var p in pooled)
            result.Add(new Embedding<float>(p.Vector) { ModelId = _source.Source.ModelId, CreatedAt = created });
        result.Usage = new UsageDetails
        {
            InputTokenCount = pooled.Sum(p => (long)p.TokenCount),
            TotalTokenCount = pooled.Sum(p => (long)p.TokenCount),
            AdditionalCounts = new AdditionalPropertiesDictionary<long> { [LoopRptChatClient.LoopsKey] = pooled.Sum(p => (long)p.LoopsSpent) },
        };
        result.AdditionalProperties = new AdditionalPropertiesDictionary { [LoopRptChatClient.ModelVersionKey] = lease.Version };
        return result;
    }

    /// <summary>Token ids of <paramref name="text"/> as the generator embeds them (BOS first when configured; start kept).</summary>
    public IReadOnlyList<long> Tokenize(string text, TextCodec codec, int maxLength)
    {
        var ids = codec.Encode(text).Select(i => (long)i);
        if (_options.AddBos && codec.BosTokenId is { } bos) ids = ids.Prepend(bos);
        var list = ids.Take(maxLength).ToArray();
        if (list.Length == 0) throw new ArgumentException($"The text '{text}' encodes to no tokens.", nameof(text));
        return list;
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null) => _source.GetService(this, Metadata, serviceType, serviceKey);

    /// <inheritdoc/>
    public void Dispose() => _source.Dispose();
}
