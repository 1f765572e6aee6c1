namespace LoopRpt.MLNet;

/// <summary>Names of the scorer's output columns (each prefixed by <see cref="AdaptiveExitScoringTransformer.Options.OutputColumnPrefix"/>).</summary>
public static class ScoreColumns
{
    /// <summary>float: sum of log p(token) over the predicted tokens (positions 1..n-1).</summary>
    public const string LogLikelihood = "LogLikelihood";
    /// <summary>float vector (n-1): log p of each predicted token under the chosen exit.</summary>
    public const string TokenLogProbabilities = "TokenLogProbabilities";
    /// <summary>float vector (n-1): 1-indexed exit step of each predicted token.</summary>
    public const string ExitSteps = "ExitSteps";
    /// <summary>float: mean of <see cref="ExitSteps"/> (NaN for a row with no predicted token).</summary>
    public const string MeanExitStep = "MeanExitStep";
    /// <summary>float: exp(-LogLikelihood / tokens) (NaN for a row with no predicted token).</summary>
    public const string Perplexity = "Perplexity";
    /// <summary>float: loop compute relative to full depth, mean exit step / loops (0 for no token).</summary>
    public const string ComputeFraction = "ComputeFraction";
    /// <summary>float vector (n-1): entropy (nats) of the next-token distribution at the exit.</summary>
    public const string TokenEntropies = "TokenEntropies";
    /// <summary>float vector (n-1): 1 if the exit's argmax is the next token, else 0.</summary>
    public const string Correct = "Correct";
    /// <summary>float vector (loops): per loop step, the count of this row's tokens its argmax predicts (empty when disabled).</summary>
    public const string StepCorrectCounts = "StepCorrectCounts";
    /// <summary>int: predicted tokens in the row (n-1, or 0).</summary>
    public const string TokenCount = "TokenCount";

    internal static readonly string[] All = [LogLikelihood, TokenLogProbabilities, ExitSteps, MeanExitStep, Perplexity, ComputeFraction, TokenEntropies, Correct, StepCorrectCounts, TokenCount];
}
