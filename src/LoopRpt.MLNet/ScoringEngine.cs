using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.MLNet;

/// <summary>The score columns of one row (one token sequence): the core's <see cref="ScoredDocument"/> in ML.NET's column types.</summary>
internal sealed class RowScore
{
    public RowScore(ScoredDocument document)
    {
        LogLikelihood = (float)document.LogLikelihood;
        TokenLogProbabilities = document.TokenLogProbabilities;
        ExitSteps = document.ExitSteps;
        TokenEntropies = document.Entropies;
        Correct = document.Correct.Select(c => c ? 1f : 0f).ToArray();
        StepCorrectCounts = document.StepCorrectCounts?.Select(c => (float)c).ToArray() ?? [];
        MeanExitStep = (float)document.MeanExitStep;
        Perplexity = (float)document.Perplexity;
        ComputeFraction = (float)document.ComputeFraction;
    }

    public float LogLikelihood { get; }
    public float[] TokenLogProbabilities { get; }
    public float[] ExitSteps { get; }
    public float[] TokenEntropies { get; }
    public float[] Correct { get; }
    public float[] StepCorrectCounts { get; }
    public float MeanExitStep { get; }
    public float Perplexity { get; }
    public float ComputeFraction { get; }
    public int TokenCount => TokenLogProbabilities.Length;
}

/// <summary>
/// The model and options behind every LoopRpt ML.NET scoring surface (the batched IDataView, the prediction engine, a
/// model reloaded by ml.Model.Load, the Pareto sweep's windows): the core's <see cref="DocumentScorer"/> (windows, batches,
/// adaptive or full-depth pass; docs/adaptive-exit.md) behind a lock. Per-step statistics and expected logits run the
/// full-depth pass; otherwise tokens stop looping at their exit.
/// </summary>
internal sealed class ScoringEngine : IDisposable
{
    private readonly object _gate = new();
    private readonly DocumentScorer _scorer;
    private bool _disposed;

    public ScoringEngine(OuroForCausalLM model, ExitMode exitMode, int batchSize, int contextLength, bool perStepStatistics)
    {
        Model = model;
        ExitMode = exitMode;
        BatchSize = batchSize;
        ContextLength = contextLength;
        PerStepStatistics = perStepStatistics;
        model.eval();
        _scorer = new DocumentScorer(model, new DocumentScorerOptions
        {
            Exit = exitMode, BatchSize = batchSize, ContextLength = contextLength, PerStepStatistics = perStepStatistics,
        });
    }

    public OuroForCausalLM Model { get; }
    public ExitMode ExitMode { get; }
    public int BatchSize { get; }
    public int ContextLength { get; }
    public bool PerStepStatistics { get; }
    public int Loops => Model.Config.TotalUtSteps;
    public bool IsDisposed => _disposed;

    /// <summary>Scores rows (a null row scores as an empty one). Thread-safe (serialized).</summary>
    /// <exception cref="InvalidOperationException">A token id is outside the model's vocabulary.</exception>
    public RowScore[] Score(IReadOnlyList<int[]?> rows)
    {
        var documents = Documents(rows);
        return Exclusive(() => _scorer.Score(documents)).Select(d => new RowScore(d)).ToArray();
    }

    /// <summary>The windows <see cref="Score"/> scores for <paramref name="rows"/>, as the Pareto sweep evaluates them.</summary>
    public IReadOnlyList<Data.TokenBatch> Batches(IReadOnlyList<int[]?> rows) => _scorer.Batches(Documents(rows));

    /// <summary>Runs <paramref name="work"/> on the model with the engine's lock held (the engine serializes its callers).</summary>
    public T Exclusive<T>(Func<T> work)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try
            {
                return work();
            }
            catch (ArgumentOutOfRangeException e) when (e.ParamName == "documents")
            {
                // A token id outside the vocabulary is bad data in the token column (ML.NET reports data errors this way).
                throw new InvalidOperationException(e.Message.Split(" (Parameter '")[0], e);
            }
        }
    }

    private static IReadOnlyList<IReadOnlyList<int>> Documents(IReadOnlyList<int[]?> rows) => rows.Select(r => (IReadOnlyList<int>)(r ?? [])).ToList();

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Model.Dispose();
        }
    }
}
