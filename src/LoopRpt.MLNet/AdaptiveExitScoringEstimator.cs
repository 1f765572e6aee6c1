using LoopRpt.Checkpoints;
using LoopRpt.MLNet.Persistence;
using Microsoft.ML;

namespace LoopRpt.MLNet;

/// <summary>
/// An estimator that loads rather than trains: <c>Fit</c> returns the scorer of an existing LoopRpt model directory
/// (no data is read beyond the schema check).
/// </summary>
public sealed class AdaptiveExitScoringEstimator : IEstimator<AdaptiveExitScoringTransformer>
{
    private readonly MLContext _ml;
    private readonly AdaptiveExitScoringTransformer.Options _options;

    internal AdaptiveExitScoringEstimator(MLContext ml, AdaptiveExitScoringTransformer.Options options)
    {
        _ml = ml ?? throw new ArgumentNullException(nameof(ml));
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        SchemaChecks.ModelDirectory(options.ModelDirectory, nameof(options));
        _options = options.Clone();
    }

    /// <inheritdoc/>
    public AdaptiveExitScoringTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.Tokens(input.Schema, _options.TokenColumnName);
        return Load(_ml, _options);
    }

    internal static AdaptiveExitScoringTransformer Load(MLContext ml, AdaptiveExitScoringTransformer.Options options)
    {
        var (device, name, fallback) = MLContextDevice.Resolve(ml, options.Device, options.FallbackToCpu);
        using var loaded = LoopRpt.Inference.ModelOpener.Open(options.ModelDirectory!, new LoopRpt.Inference.ModelOpenOptions { Device = device });
        options.Validate(loaded.Model.Config);
        var engine = new ScoringEngine(loaded.Model, options.ExitMode, options.BatchSize, Math.Min(options.ContextLength, loaded.Model.Config.MaxPositionEmbeddings), options.PerStepStatistics);
        var transformer = new AdaptiveExitScoringTransformer(ml, engine, loaded.Meta ?? new ModelMeta(), options, name, fallback, null);
        loaded.DetachModel();
        return transformer;
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        return Twin.ScorerEstimator(_ml, _options.TokenColumnName, _options.OutputColumnPrefix, "{}").GetOutputSchema(inputSchema);
    }
}
