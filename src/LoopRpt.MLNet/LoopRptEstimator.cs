using Microsoft.ML;

namespace LoopRpt.MLNet;

/// <summary>
/// Base of the LoopRpt estimators, as ML.NET's own estimator bases are of theirs: it holds the <see cref="MLContext"/> and
/// the estimator's own checked copy of its options (later changes to the caller's object do not reach it), rejects a null
/// input to <see cref="Fit"/> and leaves fitting and the output schema to the estimator.
/// </summary>
/// <typeparam name="TOptions">The estimator's options class.</typeparam>
/// <typeparam name="TTransformer">The transformer <see cref="Fit"/> returns.</typeparam>
public abstract class LoopRptEstimator<TOptions, TTransformer> : IEstimator<TTransformer>
    where TOptions : class
    where TTransformer : class, ITransformer
{
    private protected readonly MLContext _ml;
    private protected readonly TOptions _options;

    /// <param name="ml">The context (its device settings, log and random source).</param>
    /// <param name="options">The caller's options.</param>
    /// <param name="checkedCopy">Validates the options (throwing ML.NET-style exceptions) and returns the copy to keep.</param>
    private protected LoopRptEstimator(MLContext ml, TOptions options, Func<TOptions, TOptions> checkedCopy)
    {
        _ml = ml ?? throw new ArgumentNullException(nameof(ml));
        ArgumentNullException.ThrowIfNull(options);
        _options = checkedCopy(options);
    }

    /// <inheritdoc/>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return FitCore(input);
    }

    /// <summary>Fits on <paramref name="input"/> (not null).</summary>
    private protected abstract TTransformer FitCore(IDataView input);

    /// <inheritdoc/>
    public abstract SchemaShape GetOutputSchema(SchemaShape inputSchema);
}
