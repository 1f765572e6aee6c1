using LoopRpt.MLNet.Persistence;
using LoopRpt.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace LoopRpt.MLNet;

/// <summary>
/// Tokenizes a text column into token ids; fitting learns a byte-level BPE vocabulary (or loads a pretrained tokenizer).
/// </summary>
/// <remarks>
/// | Input column | Type | Output column | Type |
/// |---|---|---|---|
/// | <see cref="TokenizingEstimator.Options.InputColumnName"/> | String | <see cref="TokenizingEstimator.Options.OutputColumnName"/> | variable Vector&lt;Int32&gt; |
///
/// | Characteristic | |
/// |---|---|
/// | Needs fitting | TrainBpe: one streaming pass over the column; other sources: no data read |
/// | GPU | no |
/// | Native package | no (Microsoft.ML.Tokenizers) |
/// | ONNX export | no |
/// | Saved as | ValueMapping (tokenizer JSON, vocabulary embedded) + CustomMapping "LoopRpt.Tokenizer.v1" |
///
/// Empty or missing text gives only the requested BOS/EOS ids (an empty vector when neither is requested). The output
/// column carries <see cref="TokenizerAnnotations"/>, from which a trainer later in the pipeline learns the tokenizer.
/// </remarks>
public sealed partial class TokenizingEstimator : LoopRptEstimator<TokenizingEstimator.Options, TokenizingTransformer>
{
    internal TokenizingEstimator(MLContext ml, TokenizingEstimator.Options options)
        : base(ml, options, static o => { o.Validate(); return o.Clone(); })
    {
    }

    private protected override TokenizingTransformer FitCore(IDataView input)
    {
        var col = SchemaChecks.Text(input.Schema, _options.InputColumnName);
        var host = ((Microsoft.ML.Runtime.IHostEnvironment)_ml).Register("LoopRpt.Tokenizer");
        using var ch = host.Start("Fit");
        LoopRptTokenizer tokenizer = _options.Source switch
        {
            TokenizerSource.TrainBpe => TrainBpe(input, col, ch),
            TokenizerSource.Tiktoken => LoopRptTokenizer.Create(TokenizerSpec.FromTiktoken(_options.TiktokenEncoding)),
            TokenizerSource.BpeFiles => LoopRptTokenizer.Create(TokenizerSpec.FromBpeFiles(_options.VocabFile!, _options.MergesFile!)),
            TokenizerSource.SentencePiece => LoopRptTokenizer.Create(TokenizerSpec.FromSentencePiece(_options.SentencePieceModelFile!)),
            _ => _options.Tokenizer!,
        };
        if (_options.AddBos && tokenizer.BosTokenId is null) throw new InvalidOperationException($"{nameof(TokenizingEstimator.Options.AddBos)} is set but the tokenizer has no BOS or end-of-text token.");
        if (_options.AddEos && tokenizer.EosTokenId is null) throw new InvalidOperationException($"{nameof(TokenizingEstimator.Options.AddEos)} is set but the tokenizer has no EOS or end-of-text token.");
        ch.Info(MessageSensitivity.None, $"LoopRpt tokenizer: source={_options.Source} vocabulary_size={tokenizer.VocabularySize}");
        return new TokenizingTransformer(_ml, tokenizer, _options);
    }

    private LoopRptTokenizer TrainBpe(IDataView input, DataViewSchema.Column col, Microsoft.ML.Runtime.IChannel ch)
    {
        long rows = 0, nonEmpty = 0;
        IEnumerable<string?> Texts()
        {
            using var cursor = input.GetRowCursor([col]);
            var getter = cursor.GetGetter<ReadOnlyMemory<char>>(col);
            ReadOnlyMemory<char> value = default;
            while (cursor.MoveNext() && (_options.MaxTrainingRows == 0 || rows < _options.MaxTrainingRows))
            {
                rows++;
                getter(ref value);
                if (value.IsEmpty) continue;
                nonEmpty++;
                yield return value.ToString();
            }
        }
        var bpe = new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions
        {
            VocabularySize = _options.VocabularySize, MinFrequency = _options.MinFrequency, SpecialTokens = _options.SpecialTokens,
        }).Train(Texts());
        if (rows == 0) throw new InvalidOperationException($"Cannot train a tokenizer: the input column '{col.Name}' has no rows (empty data).");
        if (nonEmpty == 0) throw new InvalidOperationException($"Cannot train a tokenizer: all {rows} texts in column '{col.Name}' are empty.");
        ch.Info(MessageSensitivity.None, $"LoopRpt BPE: rows={rows} merges={bpe.Merges.Count} vocabulary_size={bpe.Count}");
        return LoopRptTokenizer.Create(TokenizerSpec.FromTrained(bpe));
    }

    /// <inheritdoc/>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.Text(inputSchema, _options.InputColumnName);
        return Twin.TokenizerEstimator(_ml, _options.OutputColumnName, _options.InputColumnName, "{}").GetOutputSchema(inputSchema);
    }
}

/// <summary>
/// A fitted tokenizer: maps text to token ids row by row (lazily). See <see cref="TokenizingEstimator"/> for columns.
/// Saved by <c>ml.Model.Save</c> as public components (a ValueMapping with the tokenizer JSON and a CustomMapping);
/// after <c>ml.Model.Load</c> it comes back as that chain and tokenizes identically.
/// </summary>
public sealed class TokenizingTransformer : ITransformer
{
    private readonly TokenizingEstimator.Options _options;
    private readonly ITransformer _twin;
    private readonly DataViewSchema.Annotations _annotations;

    internal TokenizingTransformer(MLContext ml, LoopRptTokenizer tokenizer, TokenizingEstimator.Options options)
    {
        Tokenizer = tokenizer;
        _options = options;
        _annotations = TokenizerAnnotations.For(tokenizer);
        var state = TokenizerState.For(tokenizer, options);
        var json = state.ToJson();
        StateCache<TokenizerState>.Register(json, state);
        _twin = Twin.TokenizerEstimator(ml, options.OutputColumnName, options.InputColumnName, json)
            .Fit(Twin.Dummy(ml, options.InputColumnName, TextDataViewType.Instance));
    }

    /// <summary>The tokenizer (encode, decode, vocabulary size, special ids).</summary>
    public LoopRptTokenizer Tokenizer { get; }

    /// <summary>The text column read.</summary>
    public string InputColumnName => _options.InputColumnName;

    /// <summary>The token-id column written.</summary>
    public string OutputColumnName => _options.OutputColumnName;

    /// <summary>Token ids of one text, exactly as the output column holds them.</summary>
    public int[] Encode(string? text) => Tokenizer.Encode(text, _options.AddBos, _options.AddEos, _options.MaxLength, _options.Overflow);

    /// <summary>Text of token ids (BOS/EOS dropped).</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer.Decode(ids);

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        SchemaChecks.Text(inputSchema, _options.InputColumnName);
        return TokenizerAnnotations.Annotate(_twin.GetOutputSchema(inputSchema), _options.OutputColumnName, _annotations);
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        SchemaChecks.Text(inputSchema, _options.InputColumnName);
        return _twin.GetRowToRowMapper(inputSchema);
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.Text(input.Schema, _options.InputColumnName);
        var output = _twin.Transform(input);
        return new AnnotatedDataView(output, TokenizerAnnotations.Annotate(output.Schema, _options.OutputColumnName, _annotations));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => _twin.Save(ctx);
}
