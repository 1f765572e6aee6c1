using LoopRpt.Checkpoints;
using LoopRpt.MLNet.Persistence;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// Loads a LoopRpt model directory and returns its featurizer (no data is read beyond the schema check).
/// </summary>
public sealed class LoopRptFeaturizingEstimator : IEstimator<LoopRptFeaturizingTransformer>
{
    private readonly MLContext _ml;
    private readonly LoopRptFeaturizerOptions _options;
    private readonly int _size;

    internal LoopRptFeaturizingEstimator(MLContext ml, LoopRptFeaturizerOptions options)
    {
        _ml = ml ?? throw new ArgumentNullException(nameof(ml));
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (string.IsNullOrWhiteSpace(options.ModelDirectory))
            throw new ArgumentException($"{nameof(LoopRptFeaturizerOptions.ModelDirectory)} must name a LoopRpt model directory.", nameof(options));
        if (!Directory.Exists(options.ModelDirectory))
            throw new DirectoryNotFoundException($"Model directory '{options.ModelDirectory}' does not exist.");
        _options = options.Clone();
        _size = FeatureVectors.SizeFor(ModelDirectory.ReadConfig(options.ModelDirectory).HiddenSize);
    }

    /// <inheritdoc/>
    public LoopRptFeaturizingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.Tokens(input.Schema, _options.TokenColumnName);
        var scorer = AdaptiveExitScoringEstimator.Load(_ml, _options.ToScorerOptions());
        return new LoopRptFeaturizingTransformer(_ml, scorer, _options, ownsScorer: true);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
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
/// | <see cref="LoopRptFeaturizerOptions.TokenColumnName"/> | Vector&lt;Int32&gt; or Vector&lt;Int64&gt; (any length) |
///
/// | Output column | Type | Meaning |
/// |---|---|---|
/// | <see cref="LoopRptFeaturizerOptions.OutputColumnName"/> | Vector&lt;Single, N&gt; | pooled exit state; N = hidden size for the presets (otherwise the next saved size, zero-padded) |
///
/// | Characteristic | |
/// |---|---|
/// | Lazy / batched | yes: <c>BatchSize</c> rows per forward pass, only when the feature column is read |
/// | GPU | optional (as for the scorer) |
/// | Native package | libtorch |
/// | ONNX export | no |
/// | Saved as | ValueMapping (scorer state JSON) + CustomMapping "LoopRpt.Features{N}.v1" |
///
/// Empty rows get a zero vector; rows longer than <see cref="LoopRptFeaturizerOptions.ContextLength"/> keep their start.
/// </remarks>
public sealed class LoopRptFeaturizingTransformer : ITransformer, IDisposable
{
    private readonly MLContext _ml;
    private readonly AdaptiveExitScoringTransformer _scorer;
    private readonly LoopRptFeaturizerOptions _options;
    private readonly bool _ownsScorer;
    private readonly Dictionary<DataViewType, ITransformer> _twins = [];
    private string? _stateJson;

    internal LoopRptFeaturizingTransformer(MLContext ml, AdaptiveExitScoringTransformer scorer, LoopRptFeaturizerOptions options, bool ownsScorer)
    {
        _ml = ml;
        _scorer = scorer;
        _options = options;
        _ownsScorer = ownsScorer;
        FeatureCount = FeatureVectors.SizeFor(scorer.Config.HiddenSize);
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
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var col = SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        return TwinFor(col.Type).GetRowToRowMapper(inputSchema);
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => TwinFor(new VectorDataViewType(NumberDataViewType.Int32)).Save(ctx);

    private ITransformer TwinFor(DataViewType tokenType)
    {
        lock (_twins)
        {
            var key = ((VectorDataViewType)tokenType).ItemType;
            if (_twins.TryGetValue(key, out var twin)) return twin;
            if (_stateJson is null)
            {
                var engine = _scorer.Engine;
                var device = _options.Device ?? (_ml.GpuDeviceId is { } id ? $"cuda:{id}" : "cpu");
                _stateJson = ScorerState.Capture(engine, _scorer.Meta, device, _options.FallbackToCpu ?? _ml.FallbackToCpu, _options.Storage,
                    _options.ModelDirectory ?? _scorer.ModelDirectory).ToJson();
                StateCache<ScoringEngine>.Register(_stateJson, engine);
            }
            twin = FeatureVectors.Twin(_ml, _options.TokenColumnName, _options.OutputColumnName, _stateJson, FeatureCount)
                .Fit(Persistence.Twin.Dummy(_ml, _options.TokenColumnName, tokenType));
            _twins[key] = twin;
            return twin;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsScorer) _scorer.Dispose();
    }
}

/// <summary>
/// The featurizer's output: input columns passed through, plus one lazily computed vector column filled
/// <c>batchSize</c> rows at a time through a read-ahead cursor over the token column (as <see cref="ScoringDataView"/>).
/// </summary>
internal sealed class FeaturesDataView(IDataView input, DataViewSchema.Column tokens, DataViewSchema schema,
    Func<IReadOnlyList<int[]?>, float[][]> compute, int batchSize) : IDataView
{
    private readonly int _output = schema.Count - 1;
    private readonly DataViewSchema.Column _tokens = tokens;
    private readonly Func<IReadOnlyList<int[]?>, float[][]> _compute = compute;
    private readonly int _batchSize = batchSize;

    public bool CanShuffle => false;
    public DataViewSchema Schema => schema;
    public long? GetRowCount() => input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        // Input columns keep their index unless one was replaced by the output (same name): map by name.
        var inputNeeded = schema.Where(c => needed.Contains(c.Index) && c.Index != _output).Select(c => input.Schema[c.Name]).ToList();
        bool featuring = needed.Contains(_output);
        return new Cursor(this, input.GetRowCursor(inputNeeded), featuring ? input.GetRowCursor([_tokens]) : null, needed);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly FeaturesDataView _parent;
        private readonly DataViewRowCursor _main;
        private readonly ReadAheadBatches<float[]>? _vectors;
        private readonly HashSet<int> _active;
        private long _position = -1;

        public Cursor(FeaturesDataView parent, DataViewRowCursor main, DataViewRowCursor? ahead, HashSet<int> active)
        {
            _parent = parent;
            _main = main;
            _active = active;
            if (ahead is not null) _vectors = new(ahead, parent._tokens, parent._batchSize, parent._compute, "featurizing");
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => _main.Batch;

        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (!_main.MoveNext()) return false;
            _position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => _main.GetIdGetter();

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index != _parent._output) return _main.GetGetter<TValue>(_main.Schema[column.Name]);
            if (!_active.Contains(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            var getter = ReadAheadBatches<float[]>.VectorGetter(() => _vectors!.At(_position));
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Invalid TValue in GetGetter: '{typeof(TValue)}', expected type: '{column.Type.RawType}'.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _main.Dispose();
                _vectors?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
