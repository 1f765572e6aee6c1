using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Objectives;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Tests.Objectives;

/// <summary>
/// The LoopRPT loss as the library computed it before its cost work (kept here as the reference the optimized objective
/// must match): the teacher pass, a clean student pass from the embeddings, and all G rollouts in one graph, each from the
/// embeddings (loop 0 recomputed G + 1 times), with full log-softmax read-outs. Same generators as the objective
/// (<see cref="LoopRptObjective.RolloutGenerator"/>): per rollout, the noise of loops 0..T-1 in order, then the exit sample.
/// </summary>
internal static class LoopRptReference
{
    /// <summary>The scalar loss with its graph (call backward on it for the reference gradients).</summary>
    public static Tensor Loss(LoopRptObjective objective, OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, int micro)
    {
        var o = objective.Options;
        var teacher = objective.Teacher!.Model;
        int G = o.Rollouts, T = lm.Config.TotalUtSteps;
        long B = inputs.shape[0], S = inputs.shape[1];
        var real = (targets != TokenBatch.IgnoreIndex).to_type(ScalarType.Float32);

        // Teacher tables (docs/method.md §4.1-4.4).
        Tensor teacherLp, refStep, baseline, M, price;
        using (no_grad())
        {
            var to = teacher.Forward(inputs);
            teacherLp = GoldLogProbs(teacher, to, targets);
            var entropy = LoopRptMath.TokenEntropy(teacher.Logits(to.Hidden[^1]));
            refStep = ExitDistribution.QExitStep(to.ExitProbabilities(), o.TeacherQ);
            baseline = teacherLp.gather(-1, refStep.unsqueeze(-1)).squeeze(-1);
            M = LoopRptMath.HardTokenMask(entropy, real, o.HardTokens, o.HardTokenQuantile, o.EntropyThreshold);
            price = LoopRptMath.TimePrice(LoopRptMath.Difficulty(entropy, teacher.Config.VocabSize), o.PriceBase, o.Kappa);
        }

        // Clean student pass.
        var clean = lm.Forward(inputs);
        var lp = GoldLogProbs(lm, clean, targets);                                                // (B, S, T)
        var logPClean = clean.ExitLogProbabilities();
        var pClean = logPClean.exp();
        var stepAdv = LoopRptMath.StepAdvantages(LoopRptMath.RewardTable(lp.detach(), baseline, price, refStep, o.RewardScale));
        var modelLoss = LoopRptMath.ModelLoss(lp, pClean, stepAdv, M);
        var entLoss = -o.EntropyBonus * LoopRptMath.MaskedMeanOverAll(-(pClean * logPClean).sum(-1), M);
        var klBackbone = o.Kl == KlVariant.BackboneWeighted
            ? LoopRptMath.MaskedMeanOverAll((LoopRptMath.K3(teacherLp, lp, o.KlClamp) * pClean.detach()).sum(-1), M)
            : null;

        // G noisy rollouts from the embeddings, stacked rollout-major.
        var gens = Enumerable.Range(0, G).Select(g => objective.RolloutGenerator(step, micro, g, lm.Device)).ToArray();
        try
        {
            Tensor Noise(Tensor h)
            {
                if (o.Sigma == 0) return h;
                var shape = new long[] { B, h.shape[1], h.shape[2] };
                if (o.Noise == NoiseKind.Gaussian)
                    return h + cat(gens.Select(g => randn(shape, dtype: h.dtype, device: h.device, generator: g)).ToArray(), 0) * o.Sigma;
                var keep = cat(gens.Select(g => rand(shape, dtype: ScalarType.Float32, device: h.device, generator: g) >= o.Sigma).ToArray(), 0);
                return h * keep.to_type(h.dtype) / (1 - o.Sigma);
            }
            var output = lm.Forward(inputs.repeat(G, 1), new LoopForwardOptions { AfterLoop = (h, _) => Noise(h) });
            var rlp = GoldLogProbs(lm, output, targets.repeat(G, 1)).view(G, B, S, T);
            var logP = output.ExitLogProbabilities().view(G, B, S, T);
            Tensor steps;
            using (no_grad())
                steps = stack(Enumerable.Range(0, G).Select(g => multinomial(logP[g].exp().reshape(B * S, T), 1, false, gens[g]).view(B, S)).ToArray(), 0);
            var index = steps.unsqueeze(-1);
            var logPi = logP.gather(-1, index).squeeze(-1);
            var reward = LoopRptMath.RewardTable(rlp.detach(), baseline, price, refStep, o.RewardScale).gather(-1, index).squeeze(-1);
            var kl = LoopRptMath.K3(teacherLp, rlp, o.KlClamp).sum(-1);
            var pg = LoopRptMath.PolicyLoss(LoopRptMath.GroupAdvantages(reward), logPi, M);
            return pg + modelLoss + entLoss + o.KlCoef * (klBackbone ?? LoopRptMath.MaskedMeanOverAll(kl, M));
        }
        finally
        {
            foreach (var g in gens) g.Dispose();
        }
    }

    /// <summary>log_softmax read-out of every step at the gold token, 0 where ignored: (B, S, T) float32.</summary>
    private static Tensor GoldLogProbs(OuroForCausalLM lm, LoopOutput output, Tensor targets)
    {
        var valid = (targets >= 0).to_type(ScalarType.Float32);
        var safe = targets.clamp_min(0).unsqueeze(-1);
        return stack(output.Hidden.Select(h => F.log_softmax(lm.Logits(h).to_type(ScalarType.Float32), -1).gather(-1, safe).squeeze(-1) * valid).ToArray(), -1);
    }
}
