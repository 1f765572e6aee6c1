using LoopRpt.Checkpoints;
using LoopRpt.MLNet.Persistence;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// Loads a LoopRpt model directory and returns its featurizer (no data is read beyond the schema check).
/// </summary>
public sealed partial class LoopRptFeaturizingEstimator : LoopRptEstimator<LoopRptFeaturizingEstimator.Options, LoopRptFeaturizingTransformer>
{
    private readonly int _size;

    internal LoopRptFeaturizingEstimator(MLContext ml, LoopRptFeaturizingEstimator.Options options)
        : base(ml, options, static o => { o.Validate(); SchemaChecks.ModelDirectory(o.ModelDirectory, nameof(options)); return o.Clone(); })
    {
        _size = FeatureVectors.SizeFor(ModelDirectory.ReadConfig(_options.ModelDirectory!).HiddenSize);
    }

    private protected override LoopRptFeaturizingTransformer FitCore(IDataView input)
    {
        SchemaChecks.Tokens(input.Schema, _options.TokenColumnName);
        var scorer = AdaptiveExitScoringEstimator.Load(_ml, _options.ToScorerOptions());
        return new LoopRptFeaturizingTransformer(_ml, scorer, _options, ownsScorer: true);
    }

    /// <inheritdoc/>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        return FeatureVectors.Twin(_ml, _options.TokenColumnName, _options.OutputColumnName, "{}", _size).GetOutputSchema(inputSchema);
    }
}

/// <summary>
/// Turns token sequences into fixed-length feature vectors that any ML.NET trainer consumes: each row's tokens run
/// their loops with the Q-exit rule, and the row's vector is the mean of its tokens' final-normed exit states, scaled
/// to unit L2 norm — the pooled embedding of <see cref="Inference.ExitStateEmbedder"/> (docs/serving.md).
/// </summary>
/// <remarks>
/// | Input column | Type |
/// |---|---|
/// | <see cref="LoopRptFeaturizingEstimator.Options.TokenColumnName"/> | Vector&lt;Int32&gt; or Vector&lt;Int64&gt; (any length) |
///
/// | Output column | Type | Meaning |
/// |---|---|---|
/// | <see cref="LoopRptFeaturizingEstimator.Options.OutputColumnName"/> | Vector&lt;Single, N&gt; | pooled exit state; N = hidden size for the presets (otherwise the next saved size, zero-padded) |
///
/// | Characteristic | |
/// |---|---|
/// | Lazy / batched | yes: <c>BatchSize</c> rows per forward pass, only when the feature column is read |
/// | GPU | optional (as for the scorer) |
/// | Native package | libtorch |
/// | ONNX export | no |
/// | Saved as | ValueMapping (scorer state JSON) + CustomMapping "LoopRpt.Features{N}.v1" |
///
/// Empty rows get a zero vector; rows longer than <see cref="LoopRptFeaturizingEstimator.Options.ContextLength"/> keep their start.
/// </remarks>
public sealed class LoopRptFeaturizingTransformer : ITransformer, IDisposable
{
    private readonly AdaptiveExitScoringTransformer _scorer;
    private readonly LoopRptFeaturizingEstimator.Options _options;
    private readonly bool _ownsScorer;
    private readonly ScoringTwins _twins;

    internal LoopRptFeaturizingTransformer(MLContext ml, AdaptiveExitScoringTransformer scorer, LoopRptFeaturizingEstimator.Options options, bool ownsScorer)
    {
        _scorer = scorer;
        _options = options;
        _ownsScorer = ownsScorer;
        int size = FeatureCount = FeatureVectors.SizeFor(scorer.Config.HiddenSize);
        _twins = new ScoringTwins(ml, scorer.Engine, options.TokenColumnName,
            () => ScorerState.Capture(scorer.Engine, scorer.Meta, options.Device ?? (ml.GpuDeviceId is { } id ? $"cuda:{id}" : "cpu"),
                options.FallbackToCpu ?? ml.FallbackToCpu, options.Storage, options.ModelDirectory ?? scorer.ModelDirectory).ToJson(),
            state => FeatureVectors.Twin(ml, options.TokenColumnName, options.OutputColumnName, state, size));
    }

    /// <summary>Length of the feature vectors.</summary>
    public int FeatureCount { get; }

    /// <summary>The model's metadata.</summary>
    public ModelMeta Meta => _scorer.Meta;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    private VectorDataViewType FeatureType => new(NumberDataViewType.Single, FeatureCount);

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema.Where(c => c.Name != _options.OutputColumnName));
        builder.AddColumn(_options.OutputColumnName, FeatureType);
        return builder.ToSchema();
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_scorer.Engine.IsDisposed, this);
        var tokens = SchemaChecks.Tokens(input.Schema, _options.TokenColumnName);
        return new FeaturesDataView(input, tokens, GetOutputSchema(input.Schema),
            rows => FeatureVectors.Compute(_scorer.Engine, rows, FeatureCount), _scorer.Engine.BatchSize);
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => _twins.Mapper(inputSchema);

    void ICanSaveModel.Save(ModelSaveContext ctx) => _twins.Save(ctx);

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsScorer) _scorer.Dispose();
    }
}

/// <summary>
/// The featurizer's output: input columns passed through, plus one lazily computed vector column (the last), filled
/// <c>batchSize</c> rows at a time (<see cref="BatchedOutputView{T}"/>).
/// </summary>
internal sealed class FeaturesDataView(IDataView input, DataViewSchema.Column tokens, DataViewSchema schema,
    Func<IReadOnlyList<int[]?>, float[][]> compute, int batchSize)
    : BatchedOutputView<float[]>(input, tokens, schema, compute, batchSize, "featurizing")
{
    // Input columns keep their index unless one was replaced by the output (same name): map by name.
    protected override DataViewSchema.Column? InputColumn(int index)
        => index == Schema.Count - 1 ? null : Input.Schema[Schema[index].Name];

    protected override Delegate OutputGetter(DataViewSchema.Column column, Func<float[]> current)
        => ReadAheadBatches<float[]>.VectorGetter(current);
}
