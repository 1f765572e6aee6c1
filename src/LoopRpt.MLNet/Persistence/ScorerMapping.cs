using System.ComponentModel;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace LoopRpt.MLNet.Persistence;

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class ScorerInput
{
    /// <summary>The row's token ids.</summary>
    [ColumnName(Cols.Tokens)] public int[]? Tokens { get; set; }
    /// <summary>The scorer description (JSON), the same on every row; it selects the cached scoring engine.</summary>
    [ColumnName(Cols.ScorerState)] public ReadOnlyMemory<char> State { get; set; }
}

/// <summary>Persistence plumbing: the scorer's outputs under internal names (see <see cref="ScoreColumns"/>).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class ScorerOutput
{
    /// <summary><see cref="ScoreColumns.LogLikelihood"/>: sum of log p over the predicted tokens.</summary>
    [ColumnName(Cols.Out + ScoreColumns.LogLikelihood)] public float LogLikelihood { get; set; }
    /// <summary><see cref="ScoreColumns.TokenLogProbabilities"/>: log p of each predicted token.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenLogProbabilities)] public float[] TokenLogProbabilities { get; set; } = [];
    /// <summary><see cref="ScoreColumns.ExitSteps"/>: 1-indexed exit step of each predicted token.</summary>
    [ColumnName(Cols.Out + ScoreColumns.ExitSteps)] public float[] ExitSteps { get; set; } = [];
    /// <summary><see cref="ScoreColumns.MeanExitStep"/>: mean of the exit steps.</summary>
    [ColumnName(Cols.Out + ScoreColumns.MeanExitStep)] public float MeanExitStep { get; set; }
    /// <summary><see cref="ScoreColumns.Perplexity"/>: exp(-log-likelihood / tokens).</summary>
    [ColumnName(Cols.Out + ScoreColumns.Perplexity)] public float Perplexity { get; set; }
    /// <summary><see cref="ScoreColumns.ComputeFraction"/>: loop compute relative to full depth.</summary>
    [ColumnName(Cols.OutComputeFraction)] public float ComputeFraction { get; set; }
    /// <summary><see cref="ScoreColumns.TokenEntropies"/>: next-token entropy (nats) at each exit.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenEntropies)] public float[] TokenEntropies { get; set; } = [];
    /// <summary><see cref="ScoreColumns.Correct"/>: 1 where the exit's argmax is the next token.</summary>
    [ColumnName(Cols.Out + ScoreColumns.Correct)] public float[] Correct { get; set; } = [];
    /// <summary><see cref="ScoreColumns.StepCorrectCounts"/>: per loop step, the tokens its argmax predicts.</summary>
    [ColumnName(Cols.Out + ScoreColumns.StepCorrectCounts)] public float[] StepCorrectCounts { get; set; } = [];
    /// <summary><see cref="ScoreColumns.TokenCount"/>: predicted tokens in the row.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenCount)] public int TokenCount { get; set; }
}

/// <summary>Persistence plumbing: scores one row with the model described by the state column (same engine as the batched path).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class ScorerMappingFactory : CustomMappingFactory<ScorerInput, ScorerOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Scorer.v1";

    /// <inheritdoc/>
    public override Action<ScorerInput, ScorerOutput> GetMapping() => static (i, o) =>
    {
        var engine = StateCache<ScoringEngine>.Get(i.State, static json => ScorerState.Parse(json).CreateEngine(), static e => !e.IsDisposed);
        var s = engine.Score([i.Tokens])[0];
        o.LogLikelihood = s.LogLikelihood;
        o.TokenLogProbabilities = s.TokenLogProbabilities;
        o.ExitSteps = s.ExitSteps;
        o.MeanExitStep = s.MeanExitStep;
        o.Perplexity = s.Perplexity;
        o.ComputeFraction = s.ComputeFraction;
        o.TokenEntropies = s.TokenEntropies;
        o.Correct = s.Correct;
        o.StepCorrectCounts = s.StepCorrectCounts;
        o.TokenCount = s.TokenCount;
    };
}
