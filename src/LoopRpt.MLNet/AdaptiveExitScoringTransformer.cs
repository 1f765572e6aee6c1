using LoopRpt.Checkpoints;
using LoopRpt.MLNet.Persistence;
using LoopRpt.Model;
using LoopRpt.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// Scores token sequences with a looped LM under an exit rule: per-token log-probabilities, exit steps, and row summaries.
/// Produced by the trainer estimator's <c>Fit</c> or by <see cref="AdaptiveExitScoringEstimator"/> (from a model directory).
/// </summary>
/// <remarks>
/// | Input column | Type |
/// |---|---|
/// | <see cref="AdaptiveExitScoringTransformer.Options.TokenColumnName"/> | Vector&lt;Int32&gt; or Vector&lt;Int64&gt; (any length) |
///
/// | Output column | Type | Meaning |
/// |---|---|---|
/// | LogLikelihood | Single | sum of log p(token) over predicted tokens 1..n-1 |
/// | TokenLogProbabilities | Vector&lt;Single&gt; (n-1) | log p of each predicted token at its exit |
/// | ExitSteps | Vector&lt;Single&gt; (n-1) | 1-indexed exit step per token |
/// | MeanExitStep | Single | mean exit step (NaN for fewer than 2 tokens) |
/// | Perplexity | Single | exp(-LogLikelihood / (n-1)) (NaN for fewer than 2 tokens) |
/// | ComputeFraction | Single | mean exit step / loops: loop compute relative to full depth (NaN for fewer than 2 tokens) |
/// | TokenEntropies | Vector&lt;Single&gt; (n-1) | entropy (nats) of the next-token distribution at the exit |
/// | Correct | Vector&lt;Single&gt; (n-1) | 1 if the exit's argmax is the next token |
/// | StepCorrectCounts | Vector&lt;Single&gt; (loops) | per loop step, the row's correctly predicted tokens (empty if disabled) |
/// | TokenCount | Int32 | n-1, or 0 |
///
/// | Characteristic | |
/// |---|---|
/// | Lazy / batched | yes: rows are scored only when a score column is read, <c>BatchSize</c> rows per forward pass |
/// | GPU | optional (CUDA build of TorchSharp in the application; <c>MLContext.GpuDeviceId</c> / <c>FallbackToCpu</c>) |
/// | Native package | libtorch (libtorch-cpu-linux-x64 or a CUDA build) |
/// | ONNX export | no |
/// | Saved as | ValueMapping (scorer JSON: weights embedded, or a model-directory reference) + CustomMapping "LoopRpt.Scorer.v1" |
///
/// The scores are the core document scorer's (<see cref="Inference.DocumentScorer"/>, docs/adaptive-exit.md): the same
/// per-token values as <c>looprpt score</c>, <c>/v1/score</c> and hosting's <c>ModelScoring</c>. Rows with an
/// empty/missing token vector or a single token score to LogLikelihood 0, empty vectors, TokenCount 0, and MeanExitStep,
/// Perplexity and ComputeFraction NaN. Rows longer than the context length are scored in windows overlapping by one token.
/// A row's scores do not depend on its batch neighbours (windows of equal padded length share a forward pass), so a
/// model reloaded with <c>ml.Model.Load</c> — which scores row by row through the same engine — gives the same values.
/// </remarks>
public sealed partial class AdaptiveExitScoringTransformer : ITransformer, IDisposable
{
    private readonly ScoringEngine _engine;
    private readonly AdaptiveExitScoringTransformer.Options _options;
    private readonly ScoringTwins _twins;

    internal AdaptiveExitScoringTransformer(MLContext ml, ScoringEngine engine, ModelMeta meta, AdaptiveExitScoringTransformer.Options options,
                                            string device, bool fallback, TrainingResult? training)
    {
        _engine = engine;
        Meta = meta;
        _options = options;
        TrainingResult = training;
        _twins = new ScoringTwins(ml, engine, options.TokenColumnName,
            () => ScorerState.Capture(engine, meta, device, fallback, options.Storage, options.ModelDirectory).ToJson(),
            state => Twin.ScorerEstimator(ml, options.TokenColumnName, options.OutputColumnPrefix, state));
    }

    /// <summary>The model's configuration.</summary>
    public OuroConfig Config => _engine.Model.Config;

    /// <summary>The model's metadata (training history, tokenizer description).</summary>
    public ModelMeta Meta { get; }

    /// <summary>The exit rule used for scoring.</summary>
    public ExitMode ExitMode => _engine.ExitMode;

    /// <summary>The model directory the weights were loaded from or saved to, if any.</summary>
    public string? ModelDirectory => _options.ModelDirectory;

    /// <summary>What training did (null when the scorer was loaded rather than trained).</summary>
    public TrainingResult? TrainingResult { get; }

    /// <summary>The token column read.</summary>
    public string TokenColumnName => _options.TokenColumnName;

    /// <summary>The live model (owned by this transformer; do not dispose).</summary>
    public OuroForCausalLM Model => _engine.Model;

    internal ScoringEngine Engine => _engine;

    /// <summary>Saves the model in LoopRpt's own directory format (config.json, model.safetensors, meta.json).</summary>
    public void SaveModelDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        Checkpoints.ModelDirectory.Save(directory, _engine.Model, Meta);
    }

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var (name, type) in OutputColumns(_options.OutputColumnPrefix)) builder.AddColumn(name, type);
        return builder.ToSchema();
    }

    internal static IEnumerable<(string Name, DataViewType Type)> OutputColumns(string prefix)
    {
        var vec = new VectorDataViewType(NumberDataViewType.Single);
        foreach (var c in ScoreColumns.All)
        {
            DataViewType t = c switch
            {
                ScoreColumns.TokenCount => NumberDataViewType.Int32,
                ScoreColumns.TokenLogProbabilities or ScoreColumns.ExitSteps or ScoreColumns.TokenEntropies or ScoreColumns.Correct or ScoreColumns.StepCorrectCounts => vec,
                _ => NumberDataViewType.Single,
            };
            yield return (prefix + c, t);
        }
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_engine.IsDisposed, this);
        var tokens = SchemaChecks.Tokens(input.Schema, _options.TokenColumnName);
        return new ScoringDataView(input, _engine, tokens, GetOutputSchema(input.Schema));
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => _twins.Mapper(inputSchema);

    void ICanSaveModel.Save(ModelSaveContext ctx) => _twins.Save(ctx);

    /// <inheritdoc/>
    public void Dispose() => _engine.Dispose();
}
