using LoopRpt.Checkpoints;
using LoopRpt.MLNet.Persistence;
using Microsoft.ML;

namespace LoopRpt.MLNet;

/// <summary>
/// An estimator that loads rather than trains: <c>Fit</c> returns the scorer of an existing LoopRpt model directory
/// (no data is read beyond the schema check).
/// </summary>
public sealed class AdaptiveExitScoringEstimator : LoopRptEstimator<AdaptiveExitScoringTransformer.Options, AdaptiveExitScoringTransformer>
{
    internal AdaptiveExitScoringEstimator(MLContext ml, AdaptiveExitScoringTransformer.Options options)
        : base(ml, options, static o => { o.Validate(); SchemaChecks.ModelDirectory(o.ModelDirectory, nameof(options)); return o.Clone(); })
    {
    }

    private protected override AdaptiveExitScoringTransformer FitCore(IDataView input)
    {
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
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        return Twin.ScorerEstimator(_ml, _options.TokenColumnName, _options.OutputColumnPrefix, "{}").GetOutputSchema(inputSchema);
    }
}
