using LoopRpt.Data;
using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

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
/// Scores a model on held-out tokens: windows of S+1 tokens starting every S tokens (input S, targets shifted by
/// one), read out under an exit rule. The windows depend only on the tokens, so two models scored on the same tokens
/// see exactly the same predictions to make.
/// </summary>
public static class HeldOutEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="lm"/> without gradients, one dispose scope per batch, on the calling thread.
    /// At most <paramref name="maxTokens"/> targets are scored. Throws <see cref="ArgumentException"/> when fewer than S+1 tokens are given.
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
        double lossSum = 0, correct = 0;
        long count = 0;
        using var noGrad = no_grad();
        for (long w0 = 0; w0 < windows; w0 += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            int rows = (int)Math.Min(batchSize, windows - w0);
            var batch = TokenBatch.FromWindows(
                Enumerable.Range(0, rows).Select(r => (ReadOnlyMemory<int>)tokens.AsMemory((int)((w0 + r) * sequenceLength), sequenceLength + 1)).ToList(),
                sequenceLength);
            var (inputs, targets) = batch.ToTensors(lm.Device);                       // (B, S)
            var output = lm.Forward(inputs);
            var logp = F.log_softmax(exit.Logits(lm, output).to_type(ScalarType.Float32), -1);   // (B, S, V)
            var gold = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1);           // (B, S); windows are full, no padding
            var hits = logp.argmax(-1).eq(targets).to_type(ScalarType.Float32);
            // One host read per batch: both sums together.
            var sums = stack([-gold.sum(), hits.sum()]).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
            lossSum += sums[0];
            correct += sums[1];
            count += (long)rows * sequenceLength;
        }
        return new HeldOutMetrics(lossSum / count, correct / count, count);
    }
}
