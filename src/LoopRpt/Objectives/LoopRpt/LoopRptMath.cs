using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Objectives;

/// <summary>
/// The pieces of the LoopRPT loss as pure tensor functions (docs/method.md §4), so each can be checked on hand-made
/// tensors. Shapes: B batch, S positions, T loop steps, G rollouts. All results are float32.
/// <para>Standard deviations are the unbiased ones (torch's default), as in the authors' code; a step or group of size 1
/// therefore has no spread and is rejected upstream (T ≥ 2, G ≥ 2).</para>
/// </summary>
public static class LoopRptMath
{
    /// <summary>Added to the standard deviation in both advantage normalizations.</summary>
    public const double AdvantageEpsilon = 1e-8;

    /// <summary>Entropy (nats) of softmax(logits) over the last axis: (..., V) → (...).</summary>
    public static Tensor TokenEntropy(Tensor logits)
    {
        var logp = F.log_softmax(logits.to_type(ScalarType.Float32), -1);
        return -(logp.exp() * logp).sum(-1);
    }

    /// <summary>
    /// Per-row linear-interpolation quantile (torch.quantile's default rule) of <paramref name="values"/> (B, S) over
    /// the positions where <paramref name="valid"/> (B, S) is nonzero; (B, 1). Rows without valid positions give a huge value.
    /// </summary>
    public static Tensor RowQuantile(Tensor values, Tensor valid, double q)
    {
        using Scalar huge = 1e30, zero = 0, one = 1, quantile = q;
        var v = values.to_type(ScalarType.Float32);
        var real = valid.to_type(ScalarType.Float32);
        var n = real.sum(-1, true);                                     // (B, 1)
        var (sorted, _) = v.masked_fill(real.eq(zero), huge).sort(-1, false, false);   // real values first, ascending
        var last = n.sub(one).clamp_min(zero);                          // (B, 1)
        var pos = last.mul(quantile);
        var lo = pos.floor();
        var hi = lo.add(one, one).minimum(last);
        var frac = pos - lo;
        var vLo = sorted.gather(-1, lo.to_type(ScalarType.Int64));
        var vHi = sorted.gather(-1, hi.to_type(ScalarType.Int64));
        return vLo.add(frac * (vHi - vLo), one);
    }

    /// <summary>
    /// Hard-token mask (B, S) float32 from the teacher's last-step entropy (docs/method.md §4.1). TopFraction keeps, per
    /// sequence of n real tokens, the k = ⌈(n − 1)(1 − <paramref name="quantile"/>)⌉ of highest entropy (0.8: 3 of 16, 2 of
    /// 10, 51 of 256, 1 of 2, none of 1): with distinct entropies exactly the tokens of the authors' strict
    /// <c>entropy &gt; torch.quantile(entropy, q)</c>. A token whose entropy equals the k-th highest exactly is kept too, so
    /// ties can only add tokens (a row of equal entropies keeps them all); padding never counts.
    /// EntropyThreshold keeps entropy ≥ <paramref name="threshold"/>; All keeps every real token.
    /// </summary>
    public static Tensor HardTokenMask(Tensor entropy, Tensor realMask, HardTokenMode mode, double quantile, double threshold)
    {
        var real = realMask.to_type(ScalarType.Float32);
        var e = entropy.to_type(ScalarType.Float32);
        switch (mode)
        {
            case HardTokenMode.All:
                return real;
            case HardTokenMode.EntropyThreshold:
            {
                using Scalar t = threshold;
                return e.ge(t).to_type(ScalarType.Float32).mul(real);
            }
            default:
                return TopFraction(e, real, quantile);
        }
    }

    /// <summary>
    /// The TopFraction mask: per row, entropy ≥ the (lo + 1)-th smallest real entropy, lo = ⌊(n − 1) q⌋ (0-based), i.e. the
    /// k = n − 1 − lo highest plus exact ties with the lowest of them; rows with k = 0 keep nothing.
    /// </summary>
    private static Tensor TopFraction(Tensor e, Tensor real, double quantile)
    {
        long S = e.shape[^1];
        if (S == 0) return real;
        // (n − 1) q in float64, nudged up by 1e-9 before the floor so that a product that is an integer in exact arithmetic
        // (15 · 0.8 = 12) is not floored to one below by rounding.
        using Scalar q = quantile, nudge = 1e-9, huge = 1e30, one = 1, zero = 0, last = S - 1;
        var n = real.to_type(ScalarType.Float64).sum(-1, true);                                  // (B, 1)
        var lo = n.sub(one).clamp_min(zero).mul(q).add(nudge, one).floor().to_type(ScalarType.Int64);   // (B, 1)
        var keepsAny = n.sub(one).sub(lo.to_type(ScalarType.Float64)).ge(one);                   // k ≥ 1
        var (sorted, _) = e.masked_fill(real.eq(zero), huge).sort(-1, false, false);               // real values first, ascending
        var cut = sorted.gather(-1, lo.add(one, one).clamp_max(last));                              // the k-th highest
        return e.ge(cut).logical_and(keepsAny).to_type(ScalarType.Float32).mul(real);
    }

    /// <summary>Difficulty d = clamp(H / ln |V|, 0, 1) (docs/method.md §4.3).</summary>
    public static Tensor Difficulty(Tensor teacherEntropy, int vocabSize)
    {
        using Scalar lnV = Math.Log(vocabSize), lo = 0.0, hi = 1.0;
        return teacherEntropy.to_type(ScalarType.Float32).div(lnV).clamp(lo, hi);
    }

    /// <summary>Time price per loop step, price = base (1 + kappa (1 - d)) (docs/method.md §4.4): easy tokens pay more.</summary>
    public static Tensor TimePrice(Tensor difficulty, double priceBase, double kappa)
    {
        using Scalar b = priceBase, k = kappa;
        return difficulty.neg().add(Held.One, Held.One).mul(k).add(Held.One, Held.One).mul(b);     // base (1 + kappa (1 - d))
    }

    /// <summary>
    /// Per-step reward table r_t = scale [ (lp_t - b) - price (t - t_ref) ] (docs/method.md §4.5).
    /// <paramref name="goldLogProbs"/>: (..., B, S, T) (leading rollout axes allowed); <paramref name="baseline"/>,
    /// <paramref name="price"/>: (B, S); <paramref name="referenceStep"/>: (B, S) int64, 0-based like t.
    /// </summary>
    public static Tensor RewardTable(Tensor goldLogProbs, Tensor baseline, Tensor price, Tensor referenceStep, double scale)
    {
        using Scalar s = scale;
        var t = HeldScalars.Arange(0, goldLogProbs.shape[^1], ScalarType.Float32, goldLogProbs.device);                     // (T)
        var delay = t - referenceStep.to_type(ScalarType.Float32).unsqueeze(-1);                       // (B, S, T)
        return ((goldLogProbs.to_type(ScalarType.Float32) - baseline.unsqueeze(-1)) - price.unsqueeze(-1) * delay).mul(s);
    }

    /// <summary>Step advantage A_t = (r_t - mean_t r) / (std_t r + 1e-8), normalized over the last (step) axis.</summary>
    public static Tensor StepAdvantages(Tensor rewardTable) => Normalize(rewardTable, -1);

    /// <summary>Group advantage A_g = (R_g - mean_g R) / (std_g R + 1e-8) over the leading rollout axis of (G, B, S).</summary>
    public static Tensor GroupAdvantages(Tensor rolloutRewards) => Normalize(rolloutRewards, 0);

    private static Tensor Normalize(Tensor x, long dim)
    {
        var mean = x.mean([dim], true);
        var std = x.std(dim, true, true);
        return (x - mean) / std.add(Held.AdvantageEpsilon, Held.One);
    }

    /// <summary>
    /// k3 estimator of KL(student ‖ teacher) on gold-token log-probs: exp(lpbar - lp) - (lpbar - lp) - 1, clamped to
    /// [-clamp, clamp] (docs/method.md §4.8). Elementwise.
    /// </summary>
    public static Tensor K3(Tensor teacherLogProbs, Tensor studentLogProbs, double clamp)
    {
        using Scalar lo = -clamp, hi = clamp;
        var diff = teacherLogProbs.to_type(ScalarType.Float32) - studentLogProbs.to_type(ScalarType.Float32);
        return (diff.exp() - diff).sub(Held.One).clamp(lo, hi);
    }

    /// <summary>
    /// sum(x · mask) / max(sum(mask) · copies, 1) over every axis, a scalar; <paramref name="mask"/> (B, S) broadcasts over
    /// leading axes of x (rollouts G), each copy counting. Unlike <see cref="Masked.MeanOverTokens"/>, no axis is kept.
    /// </summary>
    public static Tensor MaskedMeanOverAll(Tensor x, Tensor mask)
    {
        var num = (x * mask).sum();
        using Scalar copies = x.numel() / Math.Max(1, mask.numel());           // rollouts sharing the mask
        return num / mask.sum().mul(copies).clamp_min(Held.One);
    }

    /// <summary>
    /// Model loss mean_i[ sum_t -lp_t stopgrad(p_clean(t)) (1 + relu(stopgrad(A_t))) ] over the mask (docs/method.md §4.8):
    /// Ouro's expected per-step loss, up-weighted at the steps whose reward is above the token's mean over steps, that is
    /// whose log-prob gain over the previous steps beats the time price (the student against itself). The teacher's baseline
    /// b and reference step t_ref are constant per token, so they cancel in the normalized A_t (and in the group advantages):
    /// the teacher reaches this loss only through the hard-token mask and the time price, and the total loss also through the KL.
    /// </summary>
    public static Tensor ModelLoss(Tensor goldLogProbs, Tensor cleanExitProbabilities, Tensor stepAdvantages, Tensor mask)
    {
        var weight = cleanExitProbabilities.detach() * F.relu(stepAdvantages.detach()).add(Held.One, Held.One);
        return MaskedMeanOverAll((-goldLogProbs * weight).sum(-1), mask);
    }

    /// <summary>Policy loss -mean_{g,i}[ stopgrad(A_g(i)) log pi_g(i) ] over the mask: (G, B, S) inputs, plain REINFORCE.</summary>
    public static Tensor PolicyLoss(Tensor groupAdvantages, Tensor logPi, Tensor mask)
        => -MaskedMeanOverAll(groupAdvantages.detach() * logPi, mask);
}
