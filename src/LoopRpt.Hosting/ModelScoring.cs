using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.Hosting;

/// <summary>Score of one token sequence: the core document scorer's result (docs/adaptive-exit.md) and the model version.</summary>
/// <param name="Document">Per-token log-probabilities, exit steps and entropies, and their means.</param>
/// <param name="Version">Model version that produced the score.</param>
public sealed record SequenceScore(ScoredDocument Document, int Version)
{
    /// <summary>Mean log-probability of tokens 1..n-1 given their prefix (<see cref="ScoreTotals.MeanLogProbability"/>; NaN for a one-token sequence).</summary>
    public double MeanLogProb => Document.MeanLogProbability;

    /// <summary>Most likely next token after the whole sequence.</summary>
    public int NextToken => Document.NextToken;

    /// <summary>Its log-probability.</summary>
    public double NextTokenLogProb => Document.NextTokenLogProbability;
}

/// <summary>
/// Scoring on a leased model through the core <see cref="DocumentScorer"/>: safe to call from many threads at once (a
/// scorer per call, no_grad, a dispose scope per batch).
/// </summary>
public static class ModelScoring
{
    /// <summary>Scores <paramref name="sequences"/> (each at least one token), read out under <paramref name="exit"/> (default: last step).</summary>
    /// <exception cref="ArgumentException">A sequence is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the model's vocabulary.</exception>
    /// <exception cref="NotFiniteNumberException">The model's log-probabilities are not finite (NaN weights, overflow).</exception>
    public static IReadOnlyList<SequenceScore> Score(this ModelLease lease, IReadOnlyList<int[]> sequences, ExitMode? exit = null)
        => lease.Score(sequences, new DocumentScorerOptions { Exit = exit ?? ExitMode.Last });

    /// <summary>Scores <paramref name="sequences"/> (each at least one token) with the document scorer's <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">A sequence is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the model's vocabulary, or an option is out of range.</exception>
    /// <exception cref="NotFiniteNumberException">The model's log-probabilities are not finite (NaN weights, overflow).</exception>
    public static IReadOnlyList<SequenceScore> Score(this ModelLease lease, IReadOnlyList<int[]> sequences, DocumentScorerOptions options)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(options);
        for (int b = 0; b < sequences.Count; b++)
            if (sequences[b] is not { Length: > 0 }) throw new ArgumentException($"Sequence {b} is empty; a score needs at least one token.", nameof(sequences));
        var scores = new DocumentScorer(lease.Model, options).Score(sequences);
        return scores.Select(s => new SequenceScore(s, lease.Version)).ToList();
    }
}
