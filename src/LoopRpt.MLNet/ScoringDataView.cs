using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// The scorer's output: the input columns, then the score columns (<see cref="ScoreColumns.All"/>), computed
/// <c>BatchSize</c> rows at a time by the engine only when a score column is read (<see cref="BatchedOutputView{T}"/>).
/// </summary>
internal sealed class ScoringDataView(IDataView input, ScoringEngine engine, DataViewSchema.Column tokens, DataViewSchema schema)
    : BatchedOutputView<RowScore>(input, tokens, schema, engine.Score, engine.BatchSize, "scoring")
{
    protected override DataViewSchema.Column? InputColumn(int index) => index < Input.Schema.Count ? Input.Schema[index] : null;

    protected override Delegate OutputGetter(DataViewSchema.Column column, Func<RowScore> current)
    {
        ValueGetter<float> Scalar(Func<RowScore, float> f) => (ref float v) => v = f(current());
        ValueGetter<VBuffer<float>> Vector(Func<RowScore, float[]> f) => ReadAheadBatches<RowScore>.VectorGetter(() => f(current()));
        return ScoreColumns.All[column.Index - Input.Schema.Count] switch
        {
            ScoreColumns.LogLikelihood => Scalar(s => s.LogLikelihood),
            ScoreColumns.MeanExitStep => Scalar(s => s.MeanExitStep),
            ScoreColumns.Perplexity => Scalar(s => s.Perplexity),
            ScoreColumns.ComputeFraction => Scalar(s => s.ComputeFraction),
            ScoreColumns.TokenCount => (ValueGetter<int>)((ref int v) => v = current().TokenCount),
            ScoreColumns.TokenLogProbabilities => Vector(s => s.TokenLogProbabilities),
            ScoreColumns.ExitSteps => Vector(s => s.ExitSteps),
            ScoreColumns.TokenEntropies => Vector(s => s.TokenEntropies),
            ScoreColumns.Correct => Vector(s => s.Correct),
            ScoreColumns.StepCorrectCounts => Vector(s => s.StepCorrectCounts),
            _ => throw new InvalidOperationException($"Unknown score column '{column.Name}'."),
        };
    }
}
