using TorchSharp;
using LoopRpt.Data;
using LoopRpt.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Objectives;

/// <summary>
/// LoopRPT, reinforcement pre-training of the loop steps (arXiv 2603.19714; docs/method.md §4), shaped like nanochat's
/// chat_rl: teacher tables → noisy rollouts → reward → group baseline → policy-gradient loss.
/// <list type="number">
/// <item>An EMA teacher (<see cref="EmaTeacher"/>) gives per-token entropy H, the hard-token mask M, a reference step
/// t_ref (Q-exit at q = 0.5), the baseline b = lpbar_{t_ref}, difficulty d = H / ln|V| and a time price.</item>
/// <item>The noise-free student pass gives per-step gold log-probs lp_t, the reward table r_t and step advantages A_t, the
/// model loss sum_t -lp_t p(t) (1 + relu(A_t)) and the exit-entropy bonus.</item>
/// <item>G noisy rollouts (noise after every loop's final norm, propagating to later loops) each sample an exit step
/// t_g ~ p_g from a seeded local generator; R_g = r_{g,t_g}, group-normalized into A_g; L_pg = -mean A_g log p_g(t_g).</item>
/// <item>L = L_pg + L_model + L_ent + kl_coef · KL(k3 to the teacher's gold log-probs).</item>
/// </list>
/// The teacher's role: b and t_ref are constant per token across loop steps and rollouts, so they cancel in both normalized
/// advantages (A_t over steps, A_g over rollouts); they show only in the raw reward metrics. The teacher acts on the loss
/// through the hard-token mask M, the time price (its entropy) and the KL term, not by rewarding steps that beat it.
/// <para>Simplifications (as in the authors' code): plain on-policy REINFORCE (no ratio clipping, one update per batch);
/// every term averages over the hard tokens only; unbiased standard deviations in both normalizations.</para>
/// <para>Randomness: rollout g of micro-batch m at global step s draws its noise and its exit sample from
/// <c>new Generator(Seeds.Mix(Seed, s, m, g))</c>, so runs are reproducible, resume is exact, and a rollout's noise does
/// not depend on how rollouts are grouped into chunks (<see cref="LoopRptObjectiveOptions.RolloutsPerMicroBatch"/>).</para>
/// <para>Cost: loop 0 (embedding, the layers, the final norm) does not depend on the noise, which enters after it, so it is
/// computed once per micro-batch and the clean pass and all G rollouts branch from it (the shared state receives the sum of
/// their gradients). Memory: with chunking the objective runs backward itself through <see cref="ObjectiveOutput.Backward"/>;
/// see docs/looprpt.md for the formula and measured costs.</para>
/// </summary>
public sealed class LoopRptObjective : ITrainingObjective
{
    private readonly LoopRptObjectiveOptions _options;
    // The options' Scalars of every step, held for the objective's lifetime (docs/platform.md §2).
    private readonly Scalar _klCoef, _negEntropyBonus, _sigma, _keepProbability, _rollouts;
    private EmaTeacher? _teacher;

    /// <summary>Creates the objective; the options are copied and validated.</summary>
    public LoopRptObjective(LoopRptObjectiveOptions? options = null)
    {
        _options = (options ?? new LoopRptObjectiveOptions()).Clone();
        _options.Validate();
        _klCoef = _options.KlCoef;
        _negEntropyBonus = -_options.EntropyBonus;
        _sigma = _options.Sigma;
        _keepProbability = 1 - _options.Sigma;
        _rollouts = _options.Rollouts;
    }

    /// <inheritdoc/>
    public string Name => "looprpt";

    /// <summary>A copy of the options in use.</summary>
    public LoopRptObjectiveOptions Options => _options.Clone();

    /// <summary>The EMA teacher (after <see cref="Attach"/>).</summary>
    public EmaTeacher? Teacher => _teacher;

    /// <inheritdoc/>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters(OuroForCausalLM lm) => lm.UniqueParameters();

    /// <summary>
    /// <c>model_loss</c>, the exit-weighted cross-entropy on the hard tokens: the total loss adds a policy-gradient
    /// surrogate and a KL term that can take either sign, so its ratio to a median means nothing.
    /// </summary>
    public string SpikeMetric => "model_loss";

    /// <summary>Builds the EMA teacher as a copy of <paramref name="lm"/> (replacing any earlier one).</summary>
    public void Attach(OuroForCausalLM lm)
    {
        ArgumentNullException.ThrowIfNull(lm);
        if (lm.Config.TotalUtSteps < 2)
            throw new InvalidOperationException($"LoopRPT rewards loop steps against each other; the model has total_ut_steps = {lm.Config.TotalUtSteps}, at least 2 are needed.");
        _teacher?.Dispose();
        _teacher = new EmaTeacher(lm);
    }

    /// <inheritdoc/>
    public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
    {
        var teacher = _teacher ?? throw new InvalidOperationException("LoopRptObjective.Attach(model) must be called before Compute (the trainer does this at the start of the stage).");
        var o = _options;
        int G = o.Rollouts, chunk = o.ChunkSize;
        var real = Masked.TargetMask(targets);                                                    // (B, S)
        var tv = TeacherPass(teacher.Model, inputs, targets, real);
        var M = tv.HardMask;                                                                      // (B, S)

        // Loop 0 is the same for the clean pass and every rollout (the noise enters after its final norm): computed once,
        // with its graph; every pass below branches from it.
        var first = lm.FirstLoop(inputs);                                                         // (B, S, H)

        // Noise-free student pass: model loss, exit-entropy bonus, optional backbone-weighted KL.
        var clean = lm.ForwardFrom(first);
        var (lpAll, correctAll) = ReadoutAt(lm, clean, 1, tv.Positions, tv.Gold, withCorrect: true);
        var (lp, correct) = (lpAll.squeeze(0), correctAll!.squeeze(0));                          // (B, S, T), 0 off M
        var logPClean = clean.ExitLogProbabilities();                                             // (B, S, T)
        var pClean = logPClean.exp();
        var stepAdv = LoopRptMath.StepAdvantages(LoopRptMath.RewardTable(lp.detach(), tv.Baseline, tv.Price, tv.RefStep, o.RewardScale));
        var modelLoss = LoopRptMath.ModelLoss(lp, pClean, stepAdv, M);
        var exitEntropy = -(pClean * logPClean).sum(-1);                                          // (B, S)
        var entLoss = LoopRptMath.MaskedMeanOverAll(exitEntropy, M).mul(_negEntropyBonus);
        var klBackbone = o.Kl == KlVariant.BackboneWeighted
            ? LoopRptMath.MaskedMeanOverAll((LoopRptMath.K3(tv.GoldLogProbs, lp, o.KlClamp) * pClean.detach()).sum(-1), M)
            : null;

        ObjectiveOutput Output(Tensor loss, Tensor pg, Tensor klRollout, Rollouts r, Action<double>? backward)
        {
            using var noGrad = no_grad();
            using Scalar passes = ForwardPassesPerToken(lm.Config.TotalUtSteps);
            var kl = klBackbone?.detach() ?? klRollout.detach();
            var metrics = new Dictionary<string, Tensor>(StringComparer.Ordinal)
            {
                ["loss"] = loss.detach(),
                ["pg_loss"] = pg.detach(),
                ["model_loss"] = modelLoss.detach(),
                ["entropy_bonus"] = entLoss.detach(),
                ["kl"] = kl,
                ["reward_mean"] = LoopRptMath.MaskedMeanOverAll(r.Reward, M),
                ["reward_std"] = LoopRptMath.MaskedMeanOverAll(r.Reward.std(0, true, false), M),
                ["hard_fraction"] = M.sum() / real.sum().clamp_min(Held.One),
                ["teacher_exit_step"] = LoopRptMath.MaskedMeanOverAll(tv.RefStep.to_type(ScalarType.Float32).add(Held.One, Held.One), M),
                ["student_exit_step"] = LoopRptMath.MaskedMeanOverAll(ExitDistribution.QExitStep(pClean.detach(), o.TeacherQ).to_type(ScalarType.Float32).add(Held.One, Held.One), M),
                ["sampled_exit_step"] = LoopRptMath.MaskedMeanOverAll(r.Steps.to_type(ScalarType.Float32).add(Held.One, Held.One), M),
                ["exit_entropy"] = LoopRptMath.MaskedMeanOverAll(exitEntropy.detach(), M),
                ["hard_acc"] = (correct * M.unsqueeze(-1)).sum([0L, 1L]) / M.sum().clamp_min(Held.One),  // (T)
                // The LM loss every stage reports, comparable with Stage I's and with held-out cross-entropy: per loop step,
                // over every real token (not only the hard ones), from the noise-free pass.
                ["step_loss"] = Masked.MeanOverTokens(-lm.GoldLogProbsPerStep(clean, targets), real),     // (T)
                ["forward_passes"] = full([], passes, dtype: ScalarType.Float32, device: loss.device),
            };
            return new ObjectiveOutput(loss, metrics) { Backward = backward };
        }

        if (chunk >= G)
        {
            // All G rollouts in one graph; the trainer runs backward on the returned loss.
            var r = RunRollouts(lm, first, tv, 0, G, step, microStep, sampledSteps: null);
            var adv = LoopRptMath.GroupAdvantages(r.Reward);                                      // (G, B, S)
            var pg = LoopRptMath.PolicyLoss(adv, r.LogPi, M);
            var klRollout = LoopRptMath.MaskedMeanOverAll(r.Kl, M);
            var loss = pg.add(modelLoss, Held.One).add(entLoss, Held.One).add((klBackbone ?? klRollout).mul(_klCoef), Held.One);
            return Output(loss, pg, klRollout, r, backward: null);
        }

        // Chunked: (1) all rollouts without a graph, to know the group's rewards and sampled exits;
        // (2) at backward time, each chunk again with a graph (same generators ⇒ same noise), backward per chunk. A chunk
        // branches from a detached copy of the shared loop-0 state, so its backward stops there; the copies' gradients are
        // summed and sent through loop 0 once, with the clean pass's loss.
        var parts = new List<Rollouts>();
        using (no_grad())
        {
            for (int g0 = 0; g0 < G; g0 += chunk)
            {
                using var scope = NewDisposeScope();
                var part = RunRollouts(lm, first, tv, g0, Math.Min(chunk, G - g0), step, microStep, sampledSteps: null);
                parts.Add(part.MoveToOuterDisposeScope());
            }
        }
        var all = Rollouts.Cat(parts);
        var groupAdv = LoopRptMath.GroupAdvantages(all.Reward);
        var pgValue = LoopRptMath.PolicyLoss(groupAdv, all.LogPi, M);
        var klRolloutValue = LoopRptMath.MaskedMeanOverAll(all.Kl, M);
        var lossValue = pgValue.add(modelLoss, Held.One).add(entLoss, Held.One).add((klBackbone ?? klRolloutValue).mul(_klCoef), Held.One).detach();
        var denominator = M.sum().mul(_rollouts).clamp_min(Held.One);

        void Backward(double scale)
        {
            using Scalar s = scale;
            var firstGrad = zeros_like(first);                                                    // d(rollout losses)/d(loop-0 state)
            for (int g0 = 0; g0 < G; g0 += chunk)
            {
                using var scope = NewDisposeScope();
                int n = Math.Min(chunk, G - g0);
                var branch = first.detach().requires_grad_(true);
                var r = RunRollouts(lm, branch, tv, g0, n, step, microStep, all.Steps.narrow(0, g0, n));
                // The chunk's share of the group means: sums over its rollouts divided by G · |M|.
                var chunkLoss = -(groupAdv.narrow(0, g0, n) * r.LogPi * M).sum() / denominator;
                if (klBackbone is null) chunkLoss = chunkLoss.add((r.Kl * M).sum().mul(_klCoef) / denominator, Held.One);
                chunkLoss.mul(s).backward();
                firstGrad.add_(branch.grad!, Held.One);
            }
            var cleanLoss = modelLoss.add(entLoss, Held.One);
            if (klBackbone is not null) cleanLoss = cleanLoss.add(klBackbone.mul(_klCoef), Held.One);
            // sum(first · g) with g constant has gradient g with respect to first: one backward through loop 0 for all.
            cleanLoss.mul(s).add((first * firstGrad).sum(), Held.One).backward();
        }

        return Output(lossValue, pgValue, klRolloutValue, all, Backward);
    }

    /// <summary>
    /// Model forward passes per batch token of one step, in full-depth passes of T loops: the teacher's pass (T loops), the
    /// shared loop 0, the clean pass's other T − 1 loops, and G rollouts of T − 1 loops each (twice when they run in chunks:
    /// once without a graph, once with). A Stage I step makes one; its tokens/s times this is comparable with Stage I's.
    /// Backward passes and the read-outs (only at hard tokens here) are not counted.
    /// </summary>
    public double ForwardPassesPerToken(int loops)
    {
        int G = _options.Rollouts, rolloutPasses = _options.ChunkSize >= G ? 1 : 2;
        return (2.0 * loops + (double)G * (loops - 1) * rolloutPasses) / loops;
    }

    /// <summary>Teacher tables (docs/method.md §4.1–4.4), computed without gradients; intermediates freed on return.</summary>
    private TeacherView TeacherPass(OuroForCausalLM teacher, Tensor inputs, Tensor targets, Tensor real)
    {
        var o = _options;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var output = teacher.Forward(inputs);
        Tensor entropy;                                                                           // (B, S): last step, every position
        using (var last = NewDisposeScope())
            entropy = LoopRptMath.TokenEntropy(teacher.Logits(output.Hidden[^1])).MoveToOuterDisposeScope();
        var mask = LoopRptMath.HardTokenMask(entropy, real, o.HardTokens, o.HardTokenQuantile, o.EntropyThreshold);
        var positions = mask.flatten().nonzero().flatten();                                       // (K) flat indices of M
        var gold = targets.flatten().index_select(0, positions);                                  // (K)
        var (lp, _) = ReadoutAt(teacher, output, 1, positions, gold, withCorrect: false);         // lpbar_t, (1, B, S, T), 0 off M
        lp = lp.squeeze(0);
        var refStep = ExitDistribution.QExitStep(output.ExitProbabilities(), o.TeacherQ);         // t_ref, (B, S) int64
        var baseline = lp.gather(-1, refStep.unsqueeze(-1)).squeeze(-1);                          // b = lpbar_{t_ref}
        var price = LoopRptMath.TimePrice(LoopRptMath.Difficulty(entropy, teacher.Config.VocabSize), o.PriceBase, o.Kappa);
        return new TeacherView(lp.MoveToOuterDisposeScope(), refStep.MoveToOuterDisposeScope(), baseline.MoveToOuterDisposeScope(),
                               mask.MoveToOuterDisposeScope(), price.MoveToOuterDisposeScope(), positions.MoveToOuterDisposeScope(), gold.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Rollouts g0 .. g0+count-1, each a (B, S) batch branching from the shared loop-0 state <paramref name="first"/>, run one
    /// after another (their graphs all stay alive until backward). Per rollout rather than as one (count·B, S) batch: the same
    /// arithmetic, measured 1.3–1.5× faster on CPU (smaller tensors; docs/looprpt.md). Noise for rollout g comes from its
    /// own generator (loops 0..T-1 in order, then the exit sample unless given), so it is the same whichever chunk g is in.
    /// </summary>
    private Rollouts RunRollouts(OuroForCausalLM lm, Tensor first, TeacherView tv, int g0, int count, long step, int micro, Tensor? sampledSteps)
    {
        var o = _options;
        var lps = new Tensor[count];
        var logPs = new Tensor[count];
        var steps = new Tensor[count];
        for (int i = 0; i < count; i++)
        {
            using var scope = NewDisposeScope();                   // the rollout's handles go; its graph stays for backward
            using var gen = RolloutGenerator(step, micro, g0 + i, lm.Device);
            var output = RolloutForward(lm, first, gen);
            Tensor lp;                                                                            // (1, B, S, T), 0 off M
            // Without a KL through the rollouts their log-probs only enter the (detached) rewards: no graph needed.
            using (o.KlCoef == 0 || o.Kl != KlVariant.Rollout ? no_grad() : null)
                (lp, _) = ReadoutAt(lm, output, 1, tv.Positions, tv.Gold, withCorrect: false);
            var logP = output.ExitLogProbabilities();                                            // (B, S, T)
            lps[i] = lp.squeeze(0).MoveToOuterDisposeScope();
            logPs[i] = logP.MoveToOuterDisposeScope();
            steps[i] = (sampledSteps?[i] ?? SampleExit(logP, gen)).MoveToOuterDisposeScope();    // t_g, (B, S)
        }
        var lpAll = stack(lps, 0);                                                               // (Gc, B, S, T)
        var index = stack(steps, 0).unsqueeze(-1);                                               // (Gc, B, S, 1)
        var logPi = stack(logPs, 0).gather(-1, index).squeeze(-1);                                // log p_g(t_g)
        var table = LoopRptMath.RewardTable(lpAll.detach(), tv.Baseline, tv.Price, tv.RefStep, o.RewardScale);
        var reward = table.gather(-1, index).squeeze(-1);                                        // R_g = r_{g, t_g}
        var kl = LoopRptMath.K3(tv.GoldLogProbs, lpAll, o.KlClamp).sum(-1);                      // summed over steps
        return new Rollouts(reward, logPi, index.squeeze(-1), kl);
    }

    /// <summary>The generator of rollout g of micro-batch <paramref name="micro"/> at global step <paramref name="step"/>.</summary>
    internal Generator RolloutGenerator(long step, int micro, int g, Device device)
        => new((ulong)Seeds.Mix(_options.Seed, step, micro, g), device);

    /// <summary>
    /// One noisy forward of a rollout branching from the shared loop-0 state <paramref name="first"/> (B, S, H)
    /// (<see cref="OuroForCausalLM.FirstLoop"/>), its noise drawn from <paramref name="gen"/>.
    /// </summary>
    internal LoopOutput RolloutForward(OuroForCausalLM lm, Tensor first, Generator gen)
        => lm.ForwardFrom(first, new LoopForwardOptions { AfterLoop = (h, _) => AddNoise(h, gen) });

    /// <summary>Latent noise on the final-normed state (B, S, H): what the gate sees and what the next loop receives.</summary>
    private Tensor AddNoise(Tensor h, Generator gen)
    {
        var o = _options;
        if (o.Sigma == 0) return h;
        using var scope = NewDisposeScope();                       // the noise itself is not needed after the sum: free it now
        if (o.Noise == NoiseKind.Gaussian)
            return h.add(randn(h.shape, dtype: h.dtype, device: h.device, generator: gen).mul(_sigma), Held.One).MoveToOuterDisposeScope();
        var keep = rand(h.shape, dtype: ScalarType.Float32, device: h.device, generator: gen).ge(_sigma);
        return (h * keep.to_type(h.dtype)).div(_keepProbability).MoveToOuterDisposeScope();
    }

    /// <summary>t ~ p(t) per position from the rollout's generator: (B, S, T) log-probabilities → (B, S) int64.</summary>
    private static Tensor SampleExit(Tensor logP, Generator gen)
    {
        using var noGrad = no_grad();
        long B = logP.shape[0], S = logP.shape[1], T = logP.shape[2];
        return multinomial(logP.exp().reshape(B * S, T), 1, false, gen).view(B, S);
    }

    /// <summary>
    /// Per-step gold log-probs lp_t = log softmax(lm_head(hidden[t]))[y] at the hard positions only, in place in a zero
    /// tensor (R, B, S, T) float32; optionally the per-step argmax correctness there (R, B, S, T). Every LoopRPT term averages
    /// over the hard tokens M (docs/method.md §4.1), so the read-out elsewhere would only be multiplied by 0: with the
    /// published top 20% this skips 80% of the LM-head work and of the (K, V) log-softmax autograd keeps per step.
    /// <paramref name="output"/>: R copies of a (B, S) batch stacked rollout-major, hidden[t] (R·B, S, H);
    /// <paramref name="positions"/> (K): flat indices into B·S; <paramref name="gold"/> (K): their targets. One step's logits alive at a time.
    /// </summary>
    internal static (Tensor GoldLogProbs, Tensor? Correct) ReadoutAt(OuroForCausalLM lm, LoopOutput output, long copies, Tensor positions, Tensor gold, bool withCorrect)
    {
        var h0 = output.Hidden[0];
        long B = h0.shape[0] / copies, S = h0.shape[1], H = h0.shape[2], K = positions.shape[0];
        var index = gold.view(1, K, 1).expand(copies, K, 1);
        var lp = new Tensor[output.Steps];
        var correct = new Tensor[output.Steps];
        for (int t = 0; t < output.Steps; t++)
        {
            using var scope = NewDisposeScope();
            var hard = output.Hidden[t].reshape(copies, B * S, H).index_select(1, positions);    // (R, K, H)
            var logits = lm.Logits(hard).to_type(ScalarType.Float32);                          // (R, K, V)
            lp[t] = F.log_softmax(logits, -1).gather(-1, index).squeeze(-1).MoveToOuterDisposeScope();   // (R, K)
            if (withCorrect)
            {
                using var noGrad = no_grad();
                correct[t] = (logits.argmax(-1) == gold).to_type(ScalarType.Float32).MoveToOuterDisposeScope();
            }
        }
        Tensor Scatter(Tensor[] steps) => zeros([copies, B * S, steps.Length], ScalarType.Float32, h0.device)
            .index_copy(1, positions, stack(steps, -1)).view(copies, B, S, steps.Length);
        return (Scatter(lp), withCorrect ? Scatter(correct) : null);
    }

    /// <summary>EMA update of the teacher after each optimizer step.</summary>
    public void AfterOptimizerStep(OuroForCausalLM lm, long step) => _teacher?.Update(_options.EmaDecay);

    /// <summary>The teacher's weights, as <c>teacher.&lt;parameter name&gt;</c>.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateTensors()
        => _teacher?.Parameters.Select(p => ("teacher." + p.Name, p.Tensor)) ?? [];

    /// <summary>Restores the teacher's weights; a checkpoint without them cannot resume a LoopRPT stage.</summary>
    public void LoadState(Func<string, Tensor, bool> copyInto)
    {
        var teacher = _teacher ?? throw new InvalidOperationException("LoopRptObjective.Attach(model) must be called before LoadState.");
        foreach (var (name, tensor) in teacher.Parameters)
            if (!copyInto("teacher." + name, tensor))
                throw new InvalidDataException($"The checkpoint has no LoopRPT teacher weight 'teacher.{name}'; it was not written by a LoopRPT stage.");
    }

    public void Dispose()
    {
        _teacher?.Dispose();
        _teacher = null;
        foreach (var s in new[] { _klCoef, _negEntropyBonus, _sigma, _keepProbability, _rollouts }) s.Dispose();
    }

    /// <summary>Teacher tables, (B, S) or (B, S, T); <c>Positions</c> (K): flat indices of the hard tokens, <c>Gold</c> (K) their targets.</summary>
    private sealed record TeacherView(Tensor GoldLogProbs, Tensor RefStep, Tensor Baseline, Tensor HardMask, Tensor Price, Tensor Positions, Tensor Gold);

    /// <summary>Per-rollout results: rewards R_g, log pi_g, sampled steps t_g, KL summed over steps; all (Gc, B, S).</summary>
    private sealed record Rollouts(Tensor Reward, Tensor LogPi, Tensor Steps, Tensor Kl)
    {
        public Rollouts MoveToOuterDisposeScope()
            => new(Reward.MoveToOuterDisposeScope(), LogPi.MoveToOuterDisposeScope(), Steps.MoveToOuterDisposeScope(), Kl.MoveToOuterDisposeScope());

        public static Rollouts Cat(IReadOnlyList<Rollouts> parts) => new(
            cat(parts.Select(p => p.Reward).ToArray(), 0), cat(parts.Select(p => p.LogPi).ToArray(), 0),
            cat(parts.Select(p => p.Steps).ToArray(), 0), cat(parts.Select(p => p.Kl).ToArray(), 0));
    }
}
