namespace LoopRpt.Inference;

/// <summary>
/// The scores of one document from <see cref="DocumentScorer"/>. The per-position arrays have one entry per scored
/// position: entry k is position k of the document predicting token k + 1 (k = 0..n-2), read out at its exit.
/// </summary>
public sealed class ScoredDocument
{
    internal ScoredDocument(int tokens, float[] tokenLogProbabilities, float[] exitSteps, float[] entropies, bool[] correct,
        int[]? stepCorrectCounts, int nextToken, float nextTokenLogProbability, long loopsSpent, int loops)
    {
        Tokens = tokens;
        TokenLogProbabilities = tokenLogProbabilities;
        ExitSteps = exitSteps;
        Entropies = entropies;
        Correct = correct;
        StepCorrectCounts = stepCorrectCounts;
        NextToken = nextToken;
        NextTokenLogProbability = nextTokenLogProbability;
        double logLikelihood = 0, exitStepSum = 0;
        for (int k = 0; k < tokenLogProbabilities.Length; k++)
        {
            // Summed in double, in token order: deterministic for a given document.
            logLikelihood += tokenLogProbabilities[k];
            exitStepSum += exitSteps[k];
        }
        Totals = new ScoreTotals(tokenLogProbabilities.Length, logLikelihood, exitStepSum, loopsSpent, loops);
    }

    /// <summary>Tokens n of the document (the scored positions are n - 1).</summary>
    public int Tokens { get; }

    /// <summary>log p(token k + 1 | its window's tokens up to k) at position k's exit, nats; n - 1 entries.</summary>
    public float[] TokenLogProbabilities { get; }

    /// <summary>1-indexed exit step of each scored position (fractional only under expected logits); n - 1 entries.</summary>
    public float[] ExitSteps { get; }

    /// <summary>Entropy (nats) of the next-token distribution at each scored position's exit; n - 1 entries.</summary>
    public float[] Entropies { get; }

    /// <summary>True where the argmax at the position's exit is the gold next token; n - 1 entries.</summary>
    public bool[] Correct { get; }

    /// <summary>Per loop step t, the scored positions whose argmax at step t is the gold token; null unless <see cref="DocumentScorerOptions.PerStepStatistics"/>.</summary>
    public int[]? StepCorrectCounts { get; }

    /// <summary>The most likely token after the whole document (at the last token's exit); -1 for an empty document.</summary>
    public int NextToken { get; }

    /// <summary>log p of <see cref="NextToken"/>; NaN for an empty document.</summary>
    public float NextTokenLogProbability { get; }

    /// <summary>The document's sums and the means defined on them (mean exit step, perplexity, ...).</summary>
    public ScoreTotals Totals { get; }

    /// <summary>Scored positions: n - 1, or 0 for fewer than two tokens.</summary>
    public int ScoredTokens => TokenLogProbabilities.Length;

    /// <summary>Sum of <see cref="TokenLogProbabilities"/> (nats); 0 for no scored position.</summary>
    public double LogLikelihood => Totals.LogLikelihood;

    /// <summary>See <see cref="ScoreTotals.MeanLogProbability"/>.</summary>
    public double MeanLogProbability => Totals.MeanLogProbability;

    /// <summary>See <see cref="ScoreTotals.Perplexity"/>.</summary>
    public double Perplexity => Totals.Perplexity;

    /// <summary>See <see cref="ScoreTotals.MeanExitStep"/>.</summary>
    public double MeanExitStep => Totals.MeanExitStep;

    /// <summary>See <see cref="ScoreTotals.ComputeFraction"/>.</summary>
    public double ComputeFraction => Totals.ComputeFraction;
}

/// <summary>
/// Sums over the scored positions of one or more documents, and the means every scoring face reports, defined once here.
/// </summary>
/// <param name="ScoredTokens">Scored positions (each document's tokens after its first).</param>
/// <param name="LogLikelihood">Sum of the gold tokens' log-probabilities (nats).</param>
/// <param name="ExitStepSum">Sum of the scored positions' 1-indexed exit steps.</param>
/// <param name="LoopsSpent">Loops actually computed for every position of every window (window overlaps and each
/// document's last token included; every loop of every token on the full-depth pass): the compute spent.</param>
/// <param name="Loops">The model's loops T.</param>
public sealed record ScoreTotals(long ScoredTokens, double LogLikelihood, double ExitStepSum, long LoopsSpent, int Loops)
{
    /// <summary>Mean 1-indexed exit step over the scored positions (the paper's "mean exit steps"); NaN for none.</summary>
    public double MeanExitStep => ScoredTokens == 0 ? double.NaN : ExitStepSum / ScoredTokens;

    /// <summary>Mean log-probability of the gold tokens (nats per scored position); NaN for none.</summary>
    public double MeanLogProbability => ScoredTokens == 0 ? double.NaN : LogLikelihood / ScoredTokens;

    /// <summary>Mean negative log-likelihood (nats per scored position); NaN for none.</summary>
    public double NegativeLogLikelihood => -MeanLogProbability;

    /// <summary>exp(<see cref="NegativeLogLikelihood"/>); NaN for no scored position.</summary>
    public double Perplexity => Math.Exp(NegativeLogLikelihood);

    /// <summary>Loop compute of the read-outs relative to full depth: <see cref="MeanExitStep"/> / T; NaN for no scored position.</summary>
    public double ComputeFraction => MeanExitStep / Loops;

    /// <summary>The totals of several documents (a corpus): sums added, means over all their scored positions.</summary>
    /// <exception cref="ArgumentException">The documents come from models with different loop counts.</exception>
    public static ScoreTotals Of(IEnumerable<ScoredDocument> documents)
    {
        ArgumentNullException.ThrowIfNull(documents);
        long tokens = 0, loopsSpent = 0;
        double logLikelihood = 0, exitSteps = 0;
        int? loops = null;
        foreach (var d in documents)
        {
            if (loops is { } l && l != d.Totals.Loops)
                throw new ArgumentException($"Documents scored with {l} and {d.Totals.Loops} loops cannot be pooled.", nameof(documents));
            loops = d.Totals.Loops;
            tokens += d.Totals.ScoredTokens;
            logLikelihood += d.Totals.LogLikelihood;
            exitSteps += d.Totals.ExitStepSum;
            loopsSpent += d.Totals.LoopsSpent;
        }
        return new ScoreTotals(tokens, logLikelihood, exitSteps, loopsSpent, loops ?? 0);
    }
}
