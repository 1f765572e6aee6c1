using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>
/// The exit distribution over loop steps (docs/method.md §2), computed in log space for stability:
/// lambda_t = sigmoid(g_t), S_t = prod_{s&lt;=t} (1 - lambda_s), p(t) = lambda_t S_{t-1} for t &lt; T-1, p(T-1) = S_{T-2}.
/// All functions take the loop axis last: gate logits (..., T).
/// </summary>
public static class ExitDistribution
{
    /// <summary>log p(t), (..., T). The last step's gate logit is unused (the last step takes the rest).</summary>
    public static Tensor LogProbabilities(Tensor gateLogits)
    {
        long T = gateLogits.shape[^1];
        var g = gateLogits.to_type(ScalarType.Float32);
        if (T == 1) return zeros_like(g);
        var head = g.narrow(-1, 0, T - 1);                           // (..., T-1)
        var logLambda = F.logsigmoid(head);                          // log lambda_t
        var logStay = F.logsigmoid(-head);                           // log (1 - lambda_t)
        var logSurvival = logStay.cumsum(-1);                        // log S_t, t = 0..T-2
        // log S_{t-1} for t = 0..T-2, with S_{-1} = 1.
        var prevSurvival = cat([zeros_like(logSurvival.narrow(-1, 0, 1)), logSurvival.narrow(-1, 0, T - 2)], -1);
        var logPHead = logLambda.Plus(prevSurvival);
        var logPLast = logSurvival.narrow(-1, T - 2, 1);             // log S_{T-2}
        return cat([logPHead, logPLast], -1);
    }

    /// <summary>p(t), (..., T); sums to 1 over the last axis.</summary>
    public static Tensor Probabilities(Tensor gateLogits) => LogProbabilities(gateLogits).exp();

    /// <summary>H(p) = -sum_t p(t) log p(t), (...).</summary>
    public static Tensor Entropy(Tensor gateLogits)
    {
        var logP = LogProbabilities(gateLogits);
        return -(logP.exp() * logP).sum(-1);
    }

    /// <summary>
    /// Q-exit step (0-based, int64, (...)): the first t with CDF(t) &gt;= q, else the last step. q &gt;= 1 always means
    /// the last step (a rounded CDF of exactly 1.0 at an earlier step does not count); q &lt;= 0 means step 0.
    /// </summary>
    public static Tensor QExitStep(Tensor probabilities, double q)
    {
        if (double.IsNaN(q) || q < 0 || q > 1) throw new ArgumentOutOfRangeException(nameof(q), q, "The Q-exit threshold q must lie in [0, 1].");
        long T = probabilities.shape[^1];
        var shape = probabilities.shape[..^1];
        if (q >= 1.0 || T == 1) return HeldScalars.Full(shape, T - 1, ScalarType.Int64, probabilities.device);
        // CDF is monotone, so "first t with CDF >= q" = number of t < T-1 with CDF < q.
        var cdf = probabilities.to_type(ScalarType.Float32).cumsum(-1).narrow(-1, 0, T - 1);
        return cdf.LessThan(q).sum(-1, type: ScalarType.Int64);
    }

    /// <summary>Mean of (step + 1) — the 1-indexed exit step the paper reports — as a 0-d float tensor.</summary>
    public static Tensor MeanExitStep(Tensor steps) => steps.to_type(ScalarType.Float32).mean().Plus(1.0);

    /// <summary>Expected exit step E_p[t + 1] per token, (...).</summary>
    public static Tensor ExpectedExitStep(Tensor probabilities)
    {
        long T = probabilities.shape[^1];
        var t = HeldScalars.Arange(1, T + 1, ScalarType.Float32, probabilities.device);
        return (probabilities.to_type(ScalarType.Float32) * t).sum(-1);
    }
}
