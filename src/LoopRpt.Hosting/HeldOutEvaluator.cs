using LoopRpt.Evaluation;
using LoopRpt.Model;

namespace LoopRpt.Hosting;

/// <summary>Mean next-token loss and top-1 accuracy on held-out tokens.</summary>
/// <param name="Loss">Mean cross-entropy in nats over <paramref name="Tokens"/> predicted tokens.</param>
/// <param name="Accuracy">Fraction of those tokens predicted exactly (argmax).</param>
/// <param name="Tokens">Predicted (target) tokens scored.</param>
public sealed record HeldOutMetrics(double Loss, double Accuracy, long Tokens)
{
    /// <summary>The value of <paramref name="metric"/>.</summary>
    public double Get(ValidationMetric metric) => metric == ValidationMetric.Loss ? Loss : Accuracy;
}

/// <summary>
/// Scores a model on held-out tokens: windows of S+1 tokens starting every S tokens (<see cref="LoopEvaluator.Windows"/>),
/// read out under an exit rule by the project's one evaluation (<see cref="LoopEvaluator.EvaluateExit"/>). The windows
/// depend only on the tokens, so two models scored on the same tokens see exactly the same predictions to make.
/// </summary>
public static class HeldOutEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="lm"/> without gradients, one dispose scope per batch, on the calling thread.
    /// At most <paramref name="maxTokens"/> targets are scored (at least one window). Throws <see cref="ArgumentException"/> when fewer than S+1 tokens are given.
    /// </summary>
    public static HeldOutMetrics Evaluate(OuroForCausalLM lm, int[] tokens, int sequenceLength, int batchSize, ExitMode exit,
                                          long maxTokens = long.MaxValue, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lm);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(exit);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (tokens.Length < sequenceLength + 1)
            throw new ArgumentException($"Held-out data has {tokens.Length} tokens; one validation window needs {sequenceLength + 1}.", nameof(tokens));

        long windows = Math.Min((tokens.Length - 1) / sequenceLength, Math.Max(1, maxTokens / sequenceLength));
        var used = tokens[..(int)(windows * sequenceLength + 1)];
        var e = LoopEvaluator.EvaluateExit(lm, LoopEvaluator.Windows(used, batchSize, sequenceLength), exit, cancellationToken);
        return new HeldOutMetrics(e.NegativeLogLikelihood, e.Accuracy, e.Tokens);
    }
}
