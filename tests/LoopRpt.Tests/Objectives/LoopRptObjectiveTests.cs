using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Tests.Training;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Objectives;

public class LoopRptObjectiveTests
{
    private const int Vocab = 16;

    private static (Tensor Inputs, Tensor Targets) Batch(long b = 2, long s = 10, long seed = 3, bool pad = false)
    {
        var ids = TestUtil.RandomIds(b, s + 1, Vocab, seed);
        var inputs = ids.narrow(1, 0, s).contiguous();
        var targets = ids.narrow(1, 1, s).clone();
        if (pad) targets[b - 1, s - 1] = TokenBatch.IgnoreIndex;
        if (pad) targets[b - 1, s - 2] = TokenBatch.IgnoreIndex;
        return (inputs, targets);
    }

    private static float Metric(ObjectiveOutput o, string name) => o.Metrics[name].item<float>();

    [Fact]
    public void OptionsDefaultsArePublishedValues()
    {
        var o = new LoopRptObjectiveOptions();
        // bitwise: the published defaults, literals read back
        Assert.Equal((0.995, 0.8, 0.5, 0.02, 0.5, 1.0, 8, 0.1, 0.01, 0.001),
            (o.EmaDecay, o.HardTokenQuantile, o.TeacherQ, o.PriceBase, o.Kappa, o.RewardScale, o.Rollouts, o.Sigma, o.EntropyBonus, o.KlCoef));
        Assert.Equal((HardTokenMode.TopFraction, NoiseKind.Gaussian, KlVariant.Rollout), (o.HardTokens, o.Noise, o.Kl));
        Assert.Equal("looprpt", new LoopRptObjective().Name);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 1 }));
        Assert.Equal("Rollouts", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopRptObjective(new LoopRptObjectiveOptions { Noise = NoiseKind.Dropout, Sigma = 1 }));
        using var oneLoop = TestUtil.TinyModel(loops: 1, vocab: Vocab);
        Assert.Throws<InvalidOperationException>(() => new LoopRptObjective().Attach(oneLoop));
    }

    /// <summary>
    /// Issue 19 §3: LoopRPT reports the LM loss every stage reports — per-step cross-entropy over all real tokens of the
    /// noise-free pass, not only the hard ones — and its forward passes per batch token.
    /// </summary>
    [Theory]
    [InlineData(4, 0, 5.0)]      // (2·4 + 4·3) / 4
    [InlineData(4, 2, 8.0)]      // chunked: the rollouts run twice, (2·4 + 2·4·3) / 4
    public void ReportsThePerStepLmLossOnEveryTokenAndForwardPassesPerToken(int rollouts, int perMicro, double passes)
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch(pad: true);
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = rollouts, RolloutsPerMicroBatch = perMicro, Sigma = 0.2 });
        obj.Attach(lm);
        var output = obj.Compute(lm, inputs, targets, step: 0, stageStep: 0, microStep: 0);
        output.Backward?.Invoke(1.0);
        Tolerance.AssertClose(passes, obj.ForwardPassesPerToken(4), absolute: 1e-12);
        Tolerance.AssertClose(passes, Metric(output, "forward_passes"), absolute: 1e-6);
        double[] expected;
        using (no_grad())
        {
            var ce = -lm.GoldLogProbsPerStep(lm.Forward(inputs), targets);                   // (B, S, T)
            var real = (targets != TokenBatch.IgnoreIndex).to_type(ScalarType.Float32).unsqueeze(-1);
            expected = TestUtil.ToArray((ce * real).sum([0L, 1L]) / real.sum()).Select(x => (double)x).ToArray();
        }
        var got = output.Metrics["step_loss"].data<float>().ToArray();
        Assert.Equal(4, got.Length);
        for (int t = 0; t < 4; t++) Tolerance.AssertClose(expected[t], got[t], absolute: 1e-4);
    }

    /// <summary>
    /// Without noise every rollout has the clean pass's per-step log-probs and exit distribution (only the sampled exit
    /// steps differ). The teacher differs from the student (its weights scaled), so the teacher's quantities — baseline
    /// b = lpbar at t_ref, t_ref itself and the entropy behind the time price — and the student's — log-probs, exit
    /// distribution, exit entropy — cannot be mixed up unnoticed: the same host computation with the student in the
    /// teacher's place must give another loss. The whole loss — reward table, step and group advantages, model loss,
    /// entropy bonus, policy loss — is recomputed here on the host in double precision from the models' public per-step
    /// outputs and exit samples drawn with the rollouts' generators. KlCoef = 0 keeps the KL (tested against the
    /// reference path in <see cref="OptimizedStepMatchesTheReferencePath"/>) out of the loss.
    /// </summary>
    [Fact]
    public void NoiselessLossEqualsHostComputation()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch(pad: true);
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Sigma = 0, Rollouts = 3, HardTokens = HardTokenMode.All, KlCoef = 0 });
        obj.Attach(lm);
        var teacherModel = obj.Teacher!.Model;
        using (no_grad())
        {
            foreach (var w in teacherModel.parameters()) w.mul_(0.9);
            teacherModel.Backbone.early_exit_gate.bias?.add_(0.7);              // shifts the teacher's exit distribution, so t_ref moves
            teacherModel.LmHead.weight!.mul_(8);                                // sharper teacher: lower entropy, higher time price
        }
        using var scope = NewDisposeScope();
        var output = obj.Compute(lm, inputs, targets, step: 0, stageStep: 0, microStep: 0);

        const int T = 4, G = 3;
        (float[] Lp, float[] P, float[] LastLogits) Outputs(OuroForCausalLM model)
        {
            using var noGrad = no_grad();
            var o = model.Forward(inputs);
            return (TestUtil.ToArray(model.GoldLogProbsPerStep(o, targets)), TestUtil.ToArray(o.ExitProbabilities()), TestUtil.ToArray(model.Logits(o.Hidden[^1])));
        }
        var (lp, p, _) = Outputs(lm);
        var sampled = new long[G][];
        using (no_grad())
        {
            var probs = lm.Forward(inputs).ExitProbabilities();
            for (int g = 0; g < G; g++)
            {
                using var gen = obj.RolloutGenerator(0, 0, g, lm.Device);     // sigma = 0 draws no noise: sampling comes first
                sampled[g] = multinomial(probs.reshape(-1, T), 1, false, gen).reshape(-1).data<long>().ToArray();
            }
        }
        var tg = targets.data<long>().ToArray();

        (double Pg, double Model, double Ent, double Reward, double TeacherStep, double StudentStep, int N, int RefMoved) Host(OuroForCausalLM teacher)
        {
            var (tLp, tP, tLastLogits) = Outputs(teacher);
            double modelSum = 0, entSum = 0, pgSum = 0, rewardSum = 0, teacherStepSum = 0, studentStepSum = 0;
            int n = 0, refMoved = 0;
            for (int i = 0; i < tg.Length; i++)
            {
                if (tg[i] < 0) continue;
                n++;
                // Teacher: last-step entropy → price; Q-exit at 0.5 → t_ref; baseline b = the teacher's lpbar at t_ref.
                var z = tLastLogits.Skip(i * Vocab).Take(Vocab).Select(x => (double)x).ToArray();
                double max = z.Max(), logZ = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
                double h = -z.Sum(x => Math.Exp(x - logZ) * (x - logZ));
                double price = 0.02 * (1 + 0.5 * (1 - Math.Clamp(h / Math.Log(Vocab), 0, 1)));
                int QExit(float[] probs)
                {
                    double cdf = 0;
                    for (int t = 0; t < T - 1; t++) { cdf += probs[i * T + t]; if (cdf >= 0.5) return t; }
                    return T - 1;
                }
                int tRef = QExit(tP), studentStep = QExit(p);
                if (tRef != studentStep) refMoved++;
                teacherStepSum += tRef + 1;
                studentStepSum += studentStep + 1;
                double b = tLp[i * T + tRef];
                // Student: rewards from its log-probs, weighted by its exit distribution.
                var r = Enumerable.Range(0, T).Select(t => (lp[i * T + t] - b) - price * (t - tRef)).ToArray();
                double mean = r.Average(), std = Math.Sqrt(r.Sum(x => (x - mean) * (x - mean)) / (T - 1));
                for (int t = 0; t < T; t++)
                {
                    double a = (r[t] - mean) / (std + 1e-8);
                    modelSum += -lp[i * T + t] * p[i * T + t] * (1 + Math.Max(0, a));
                    entSum += -p[i * T + t] * Math.Log(p[i * T + t]);
                }
                // Policy: R_g = r_{t_g}, group-normalized (unbiased std), times log p(t_g).
                var R = Enumerable.Range(0, G).Select(g => r[sampled[g][i]]).ToArray();
                rewardSum += R.Sum();
                double rMean = R.Average(), rStd = Math.Sqrt(R.Sum(x => (x - rMean) * (x - rMean)) / (G - 1));
                for (int g = 0; g < G; g++)
                    pgSum += -(R[g] - rMean) / (rStd + 1e-8) * Math.Log(p[i * T + sampled[g][i]]);
            }
            return (pgSum / (G * n), modelSum / n, -0.01 * entSum / n, rewardSum / (G * n), teacherStepSum / n, studentStepSum / n, n, refMoved);
        }

        var (pg, model, ent, reward, teacherStep, studentStep, n, refMoved) = Host(teacherModel);
        double expected = pg + model + ent;
        Assert.Equal(18, n);
        Assert.True(refMoved > 0, "the perturbed teacher must pick another t_ref than the student somewhere");
        Tolerance.AssertClose(pg, Metric(output, "pg_loss"), absolute: 1e-4);
        Tolerance.AssertClose(model, Metric(output, "model_loss"), absolute: 1e-4);
        Tolerance.AssertClose(ent, Metric(output, "entropy_bonus"), absolute: 1e-5);
        Tolerance.AssertClose(expected, output.Loss.item<float>(), absolute: 1e-4);
        // The normalized advantages cancel b and t_ref (constant per token); the raw rewards and exit steps do not.
        Tolerance.AssertClose(reward, Metric(output, "reward_mean"), absolute: 1e-4);
        Tolerance.AssertClose(teacherStep, Metric(output, "teacher_exit_step"), absolute: 1e-5);
        Tolerance.AssertClose(studentStep, Metric(output, "student_exit_step"), absolute: 1e-5);
        Assert.True(Metric(output, "kl") > 0, "the teacher differs: nonzero KL (not in the loss, KlCoef = 0)");
        Tolerance.AssertClose(1, Metric(output, "hard_fraction"), absolute: 1e-6);
        Assert.Equal(4, output.Metrics["hard_acc"].shape[0]);

        // The same computation with the student as its own teacher is far off in the loss (through the entropy behind the
        // price), the rewards (through b and t_ref) and the reference step: the checks above can see a mix-up.
        var (pgS, modelS, _, rewardS, teacherStepS, _, _, _) = Host(lm);
        Assert.True(Math.Abs(pgS + modelS + ent - expected) > 1e-3, $"a mixed-up entropy must change the loss beyond the tolerance: {expected} vs {pgS + modelS + ent}");
        Assert.True(Math.Abs(rewardS - reward) > 1e-3, $"a mixed-up baseline must change the rewards: {reward} vs {rewardS}");
        Assert.True(Math.Abs(teacherStepS - teacherStep) > 1e-3, "a mixed-up t_ref must change teacher_exit_step");
    }

    /// <summary>
    /// The hard tokens are the teacher's: per 16-target row the 3 of highest TEACHER last-step entropy (the documented
    /// count ⌈(n − 1)(1 − q)⌉ = ⌈15 · 0.2⌉ = 3, not the 4 that ≥ the 0.8 quantile kept). The teacher differs from the student
    /// (scaled weights, sharper head), so its choice and the student's differ; which tokens were chosen shows in
    /// <c>exit_entropy</c>, the student's exit entropy averaged over the chosen tokens, recomputed here on the host.
    /// </summary>
    [Fact]
    public void HardTokensAreTheTopTwentyPercentByTheTeachersEntropy()
    {
        const int S = 16, K = 3;
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch(b: 2, s: S);
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 2 });
        obj.Attach(lm);
        var teacher = obj.Teacher!.Model;
        using (no_grad())
        {
            foreach (var w in teacher.parameters()) w.mul_(0.8);
            teacher.LmHead.weight!.mul_(6);
        }
        using var scope = NewDisposeScope();
        var output = obj.Compute(lm, inputs, targets, 0, 0, 0);

        // Host: last-step token entropy (double) of a model's logits; the K highest per row; the student's exit entropy.
        double[] LastStepEntropy(OuroForCausalLM model)
        {
            using var noGrad = no_grad();
            var z = TestUtil.ToArray(model.Logits(model.Forward(inputs).Hidden[^1]));
            return Enumerable.Range(0, 2 * S).Select(i =>
            {
                var row = z.Skip(i * Vocab).Take(Vocab).Select(x => (double)x).ToArray();
                double max = row.Max(), logZ = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                return -row.Sum(x => Math.Exp(x - logZ) * (x - logZ));
            }).ToArray();
        }
        int[] TopPerRow(double[] e) => Enumerable.Range(0, 2).SelectMany(b =>
            Enumerable.Range(b * S, S).OrderByDescending(i => e[i]).Take(K)).Order().ToArray();
        float[] exitEntropy;
        using (no_grad())
        {
            var p = lm.Forward(inputs).ExitProbabilities();
            exitEntropy = TestUtil.ToArray(-(p * p.log()).sum(-1));
        }
        double MeanExitEntropy(int[] chosen) => chosen.Average(i => (double)exitEntropy[i]);

        var byTeacher = TopPerRow(LastStepEntropy(teacher));
        var byStudent = TopPerRow(LastStepEntropy(lm));
        Assert.NotEqual(byTeacher, byStudent);
        Tolerance.AssertClose(2.0 * K / (2 * S), Metric(output, "hard_fraction"), "hard_fraction", absolute: 1e-6);
        Tolerance.AssertClose(MeanExitEntropy(byTeacher), Metric(output, "exit_entropy"), "exit_entropy over the teacher's choice", absolute: 1e-5);
        Assert.True(Math.Abs(MeanExitEntropy(byTeacher) - MeanExitEntropy(byStudent)) > 1e-4,
            "the student's choice must give another exit_entropy, or the check above could not tell them apart");
    }

    /// <summary>
    /// The teacher the trainer keeps is the EMA of the student's weights after each optimizer step,
    /// theta_bar_k = d theta_bar_(k-1) + (1 - d) theta_k from theta_bar_0 = theta_0, recomputed here in double from the
    /// student's weights read after every step (two micro-batches per step: one update per optimizer step, not per
    /// micro-batch). A teacher updated before the step, per micro-batch, or not at all would be off by far more than the tolerance.
    /// </summary>
    [Fact]
    public void TheTrainersTeacherIsTheEmaOfTheStudentAfterEachStep()
    {
        const double Decay = 0.5;
        const int Steps = 3;
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
        string[] names = ["model.early_exit_gate.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight", "model.embed_tokens.weight"];
        double[] Read(OuroForCausalLM m, string name) => TestUtil.ToArray(m.UniqueParameters().Single(p => p.Name == name).Param).Select(x => (double)x).ToArray();
        var students = new List<Dictionary<string, double[]>> { names.ToDictionary(n => n, n => Read(lm, n)) };
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            LogEvery = 1, Progress = new SyncProgress<TrainingProgress>(_ => students.Add(names.ToDictionary(n => n, n => Read(lm, n)))),
        });
        using var objective = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 2, EmaDecay = Decay, Seed = 4 });
        trainer.Train(lm, new PackedTokenSource(TrainerTests.PatternTokens(2000, 32, 3), 2, 16, 11),
            [new TrainingStage(objective, Steps) { LearningRate = 1e-2, WarmupFraction = 0, GradientAccumulation = 2 }]);
        Assert.Equal(Steps + 1, students.Count);

        foreach (var name in names)
        {
            var ema = students[0][name].ToArray();
            for (int k = 1; k <= Steps; k++)
                for (int i = 0; i < ema.Length; i++) ema[i] = Decay * ema[i] + (1 - Decay) * students[k][name][i];
            var teacher = Read(objective.Teacher!.Model, name);
            Tolerance.AssertClose(ema, teacher, name, absolute: 1e-6);
            // The alternatives a wrong trainer would give: the initial copy, or the EMA one step behind.
            var lagging = students[0][name].ToArray();
            for (int k = 1; k < Steps; k++)
                for (int i = 0; i < lagging.Length; i++) lagging[i] = Decay * lagging[i] + (1 - Decay) * students[k][name][i];
            double Gap(double[] a) => a.Zip(ema, (x, y) => Math.Abs(x - y)).Max();
            Assert.True(Gap(students[0][name]) > 1e-4 && Gap(lagging) > 1e-4, $"{name}: the student did not move enough to tell the teachers apart");
        }
    }

    [Fact]
    public void EmaUpdateMovesTeacherTowardStudent()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { EmaDecay = 0.9 });
        obj.Attach(lm);
        var teacher = obj.Teacher!.Model;
        var before = TestUtil.ToArray(teacher.Backbone.early_exit_gate.weight!);
        // bitwise: copied weights, not recomputed
        Assert.Equal(TestUtil.ToArray(lm.Backbone.early_exit_gate.weight!), before);
        Assert.All(teacher.parameters(), p => Assert.False(p.requires_grad));
        using (no_grad())
            foreach (var p in lm.parameters()) p.add_(1.0);
        obj.AfterOptimizerStep(lm, 0);
        // theta_bar = 0.9 theta_bar + 0.1 (theta_bar + 1) = theta_bar + 0.1.
        var after = TestUtil.ToArray(teacher.Backbone.early_exit_gate.weight!);
        for (int i = 0; i < before.Length; i++) Tolerance.AssertClose(before[i] + 0.1f, after[i], absolute: 1e-5);
        var emb = TestUtil.ToArray(teacher.Backbone.embed_tokens.weight!);
        var studentEmb = TestUtil.ToArray(lm.Backbone.embed_tokens.weight!);
        Tolerance.AssertClose(studentEmb[0] - 0.9f, emb[0], absolute: 1e-5);
    }

    [Fact]
    public void TeacherStateRoundTripsAndMissingStateFails()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        using var obj = new LoopRptObjective();
        obj.Attach(lm);
        var saved = obj.StateTensors().ToDictionary(t => t.Name, t => t.Tensor.clone());
        Assert.Contains("teacher.model.early_exit_gate.weight", saved.Keys);
        Assert.Equal(lm.UniqueParameters().Count, saved.Count);
        using (no_grad())
            foreach (var p in obj.Teacher!.Model.parameters()) p.zero_();
        obj.LoadState((name, dst) => { if (!saved.TryGetValue(name, out var src)) return false; using (no_grad()) dst.copy_(src); return true; });
        // bitwise: copied weights, not recomputed
        Assert.Equal(TestUtil.ToArray(lm.Backbone.early_exit_gate.weight!), TestUtil.ToArray(obj.Teacher.Model.Backbone.early_exit_gate.weight!));
        Assert.Throws<InvalidDataException>(() => obj.LoadState((_, _) => false));
    }

    [Fact]
    public void RolloutsReproducibleForSeedAndDifferentAcrossSeeds()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch();
        float[] Run(long seed, long step)
        {
            using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Seed = seed, Sigma = 0.5, Rollouts = 4 });
            obj.Attach(lm);
            using var scope = NewDisposeScope();
            var o = obj.Compute(lm, inputs, targets, step, step, 0);
            return [o.Loss.item<float>(), Metric(o, "reward_mean"), Metric(o, "reward_std"), Metric(o, "sampled_exit_step")];
        }
        var a = Run(1, 0);
        // bitwise: same seed, same code: the same computation; other seeds must differ
        Assert.Equal(a, Run(1, 0));
        Assert.NotEqual(a, Run(2, 0));
        Assert.NotEqual(a, Run(1, 1));
        Assert.True(a[2] > 0, "noisy rollouts must disagree");
    }

    /// <summary>
    /// The rollout noise is added to the final-normed state, after the norm's weights: h = w ⊙ x / rms(x) + σ ε. The final
    /// norm's weights are set away from 1 (with unit weights, noise added between the normalization and the weight, w ⊙ (x̂ + σ ε),
    /// would look the same).
    /// </summary>
    [Fact]
    public void NoiseEntersTheNextLoop()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        using (no_grad())
        {
            using var g = new Generator(17);
            lm.Backbone.norm.Weight.copy_(rand(lm.Backbone.norm.Weight.shape, generator: g) * 1.5 + 0.25);    // in [0.25, 1.75)
        }
        var (inputs, _) = Batch();
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Sigma = 0.3 });
        using var scope = NewDisposeScope();
        using var no = no_grad();
        using var gen = obj.RolloutGenerator(3, 0, 1, lm.Device);
        var noisy = obj.RolloutForward(lm, lm.FirstLoop(inputs), gen);
        var clean = lm.Forward(inputs);
        using var replayGen = obj.RolloutGenerator(3, 0, 1, lm.Device);
        var noise = Enumerable.Range(0, 4).Select(_ => randn(clean.Hidden[0].shape, generator: replayGen)).ToArray();

        // Loop 0: the noisy state is exactly the clean (weighted, normed) state plus sigma · noise ...
        Assert.True((noisy.Hidden[0] - (clean.Hidden[0] + noise[0] * 0.3)).abs().max().item<float>() < 1e-6);
        // ... and not the noise scaled by the norm's weights (noise before the weight multiply).
        Assert.True((noisy.Hidden[0] - (clean.Hidden[0] + lm.Backbone.norm.Weight * noise[0] * 0.3)).abs().max().item<float>() > 1e-2);
        // Later loops computed from the noisy state: not just "clean + noise" (the noise propagated through the layers).
        for (int t = 1; t < 4; t++)
            Assert.True((noisy.Hidden[t] - (clean.Hidden[t] + noise[t] * 0.3)).abs().max().item<float>() > 1e-3, $"loop {t}");
        // Replaying the same noise through the model's hook reproduces every loop and the gate logits.
        var replay = lm.Forward(inputs, new LoopForwardOptions { AfterLoop = (h, t) => h + noise[t] * 0.3 });
        for (int t = 0; t < 4; t++) Assert.True((noisy.Hidden[t] - replay.Hidden[t]).abs().max().item<float>() < 1e-5);
        Assert.True((noisy.GateLogits - replay.GateLogits).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void DropoutNoiseZeroesAndRescales()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, _) = Batch();
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Noise = NoiseKind.Dropout, Sigma = 0.5 });
        using var scope = NewDisposeScope();
        using var no = no_grad();
        using var gen = obj.RolloutGenerator(0, 0, 0, lm.Device);
        var noisy = obj.RolloutForward(lm, lm.FirstLoop(inputs), gen);
        var clean = lm.Forward(inputs);
        var ratio = noisy.Hidden[0] / clean.Hidden[0];
        var zeroFrac = (ratio.abs() < 1e-6).to_type(ScalarType.Float32).mean().item<float>();
        var twoFrac = ((ratio - 2).abs() < 1e-4).to_type(ScalarType.Float32).mean().item<float>();
        Assert.InRange(zeroFrac, 0.4f, 0.6f);
        Tolerance.AssertClose(1f, zeroFrac + twoFrac, absolute: 1e-4);
    }

    [Fact]
    public void GradientsReachGateAndBackbone()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch();
        // No entropy bonus: the policy gradient is then the only path to the gate.
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 4, Sigma = 0.3, EntropyBonus = 0 });
        obj.Attach(lm);
        using var scope = NewDisposeScope();
        obj.Compute(lm, inputs, targets, 0, 0, 0).Loss.backward();
        Assert.True(lm.Backbone.early_exit_gate.weight!.grad!.abs().sum().item<float>() > 0);
        Assert.True(lm.Backbone.layers[0].self_attn.q_proj.weight!.grad!.abs().sum().item<float>() > 0);
        Assert.True(lm.Backbone.embed_tokens.weight!.grad!.abs().sum().item<float>() > 0);
        Assert.All(obj.Teacher!.Model.parameters(), p => Assert.Null(p.grad));
    }

    /// <summary>
    /// The policy gradient reaches the backbone through the noisy rollout states, not only the gate. The model loss comes
    /// from the clean pass and does not depend on the rollout seed; with the entropy bonus and the KL off, the gradients
    /// of two seeds therefore differ only by their policy gradients. If the rollouts' states were detached (or the noise
    /// added outside the graph), every backbone gradient would be the same for both seeds.
    /// </summary>
    [Fact]
    public void PolicyGradientReachesTheBackboneThroughTheNoisyStates()
    {
        var (inputs, targets) = Batch();
        Dictionary<string, float[]> Grads(long seed)
        {
            using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
            using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 4, Sigma = 0.3, EntropyBonus = 0, KlCoef = 0, Seed = seed });
            obj.Attach(lm);
            using var scope = NewDisposeScope();
            obj.Compute(lm, inputs, targets, 0, 0, 0).Loss.backward();
            return new()
            {
                ["q_proj"] = TestUtil.ToArray(lm.Backbone.layers[0].self_attn.q_proj.weight!.grad!),
                ["down_proj"] = TestUtil.ToArray(lm.Backbone.layers[1].mlp.down_proj.weight!.grad!),
                ["norm"] = TestUtil.ToArray(lm.Backbone.norm.Weight.grad!),
                ["embed"] = TestUtil.ToArray(lm.Backbone.embed_tokens.weight!.grad!),
            };
        }
        var a = Grads(1);
        var again = Grads(1);
        var b = Grads(2);
        foreach (var (name, g) in a)
        {
            Assert.Equal(g, again[name]);                                           // bitwise: same seed, same computation
            double diff = Math.Sqrt(g.Zip(b[name], (x, y) => (double)(x - y) * (x - y)).Sum()), norm = Math.Sqrt(g.Sum(x => (double)x * x));
            Assert.True(diff > 1e-3 * norm, $"{name}: the rollout seed does not reach this gradient (|Δ| {diff:E3}, |grad| {norm:E3})");
        }
    }

    [Fact]
    public void ChunkedRolloutsGiveTheSameLossAndGradients()
    {
        var (inputs, targets) = Batch();
        (float Loss, float[] Gate, float[] Q) Run(int perMicro, KlVariant kl)
        {
            using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
            using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 4, Sigma = 0.3, RolloutsPerMicroBatch = perMicro, Kl = kl, KlCoef = 0.5 });
            obj.Attach(lm);
            using (no_grad())
                obj.Teacher!.Model.Backbone.embed_tokens.weight!.mul_(0.9);      // a teacher that differs: nonzero KL
            using var scope = NewDisposeScope();
            var o = obj.Compute(lm, inputs, targets, 2, 2, 1);
            Assert.Equal(perMicro is > 0 and < 4, o.Backward is not null);
            if (o.Backward is { } bw) bw(0.5); else (o.Loss * 0.5).backward();
            Assert.True(Metric(o, "kl") > 0);
            return (o.Loss.item<float>(), TestUtil.ToArray(lm.Backbone.early_exit_gate.weight!.grad!),
                    TestUtil.ToArray(lm.Backbone.layers[1].mlp.down_proj.weight!.grad!));
        }
        foreach (var kl in new[] { KlVariant.Rollout, KlVariant.BackboneWeighted })
        {
            var full = Run(0, kl);
            foreach (var chunk in new[] { 1, 3 })
            {
                var part = Run(chunk, kl);
                Tolerance.AssertClose(full.Loss, part.Loss, absolute: 1e-4);
                for (int i = 0; i < full.Gate.Length; i++) Tolerance.AssertClose(full.Gate[i], part.Gate[i], absolute: 1e-4);
                double maxDiff = full.Q.Zip(part.Q, (a, b) => Math.Abs(a - b)).Max(), scale = full.Q.Max(Math.Abs);
                Assert.True(maxDiff <= 1e-4 * Math.Max(scale, 1e-3), $"chunk {chunk} {kl}: max grad diff {maxDiff} (scale {scale})");
            }
        }
    }

    /// <summary>
    /// The optimized step (loop 0 computed once and shared by the clean pass and the rollouts, one read-out per step,
    /// chunked backward through the shared state) gives the loss and every parameter gradient of the reference path
    /// (<see cref="LoopRptReference"/>: every pass from the embeddings, log-softmax read-outs), with the same noise and exit
    /// samples. Tolerance: loss within 1e-6 relative; per parameter, ‖Δgrad‖₂ ≤ 1e-5 ‖grad‖₂ (float32 sums in another order).
    /// </summary>
    [Theory]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 0)]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 1)]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 3)]
    [InlineData(NoiseKind.Gaussian, KlVariant.BackboneWeighted, 0)]
    [InlineData(NoiseKind.Gaussian, KlVariant.BackboneWeighted, 2)]
    [InlineData(NoiseKind.Dropout, KlVariant.Rollout, 0)]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 0, HardTokenMode.All)]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 2, HardTokenMode.EntropyThreshold)]
    [InlineData(NoiseKind.Gaussian, KlVariant.Rollout, 0, HardTokenMode.TopFraction, 0.0)]
    public void OptimizedStepMatchesTheReferencePath(NoiseKind noise, KlVariant kl, int perMicro, HardTokenMode hard = HardTokenMode.TopFraction, double klCoef = 0.5)
    {
        var (inputs, targets) = Batch(b: 3, s: 10, pad: true);
        var options = new LoopRptObjectiveOptions
        {
            Rollouts = 4, Sigma = noise == NoiseKind.Gaussian ? 0.3 : 0.2, Noise = noise, Kl = kl, KlCoef = klCoef, RolloutsPerMicroBatch = perMicro, Seed = 3,
            HardTokens = hard, EntropyThreshold = 2.7,
        };
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        using var reference = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        using var obj = new LoopRptObjective(options);
        obj.Attach(lm);
        using (no_grad())
            foreach (var p in obj.Teacher!.Model.parameters()) p.mul_(0.9);          // a teacher that differs: nonzero KL
        using var scope = NewDisposeScope();

        var o = obj.Compute(lm, inputs, targets, 7, 7, 2);
        if (o.Backward is { } bw) bw(1.0); else o.Loss.backward();
        var refLoss = LoopRptReference.Loss(obj, reference, inputs, targets, 7, 2);
        refLoss.backward();

        Assert.True(Metric(o, "kl") > 1e-4, $"kl {Metric(o, "kl")}");
        double loss = o.Loss.item<float>(), expected = refLoss.item<float>();
        Assert.True(Math.Abs(loss - expected) <= 1e-6 * Math.Abs(expected), $"loss {loss} vs reference {expected}");
        var refGrads = reference.UniqueParameters().ToDictionary(p => p.Name, p => p.Param.grad!);
        foreach (var (name, p) in lm.UniqueParameters())
        {
            var g = p.grad!;
            var r = refGrads[name];
            double diff = (g - r).norm().item<float>(), norm = r.norm().item<float>();
            Assert.True(norm > 0, $"{name}: the reference gradient is zero");
            Assert.True(diff <= 1e-5 * norm, $"{name}: |grad - reference| = {diff:E3}, |reference| = {norm:E3}");
        }
    }

    /// <summary>A batch without a single real target has no hard tokens: the read-outs are empty and the loss is 0.</summary>
    [Fact]
    public void NoHardTokensGiveAZeroLoss()
    {
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        var (inputs, targets) = Batch();
        targets.fill_(TokenBatch.IgnoreIndex);
        using var obj = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 2, Sigma = 0.3 });
        obj.Attach(lm);
        using var scope = NewDisposeScope();
        var o = obj.Compute(lm, inputs, targets, 0, 0, 0);
        o.Loss.backward();
        // bitwise: no hard token: every term is multiplied by an empty mask, exactly 0
        Assert.Equal(0f, o.Loss.item<float>());
        Assert.Equal(0f, Metric(o, "hard_fraction"));
    }

    [Fact]
    public void TrainerRunsLoopRptAndResumesExactly()
    {
        var tokens = TrainerTests.PatternTokens(3000, 32, 3);
        List<TrainingProgress> Train(string? dir, bool resume, CancellationTokenSource? cancelAt2)
        {
            var reports = new List<TrainingProgress>();
            using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
            var trainer = new LoopedLmTrainer(new TrainerOptions
            {
                LogEvery = 1, CheckpointDirectory = dir, Resume = resume,
                Progress = new SyncProgress<TrainingProgress>(p => { reports.Add(p); if (p.Step == 2) cancelAt2?.Cancel(); }),
            });
            var objective = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = 3, RolloutsPerMicroBatch = 2, Seed = 9 });
            var stage = new TrainingStage(objective, 4) { LearningRate = 1e-3, GradientAccumulation = 2 };
            try { trainer.Train(lm, new PackedTokenSource(tokens, 2, 16, 11), [stage], cancelAt2?.Token ?? default); }
            catch (OperationCanceledException) { }
            finally { objective.Dispose(); }
            return reports;
        }
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-rpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var straight = Train(null, false, null);
            Assert.Equal(4, straight.Count);
            foreach (var key in new[] { "pg_loss", "model_loss", "entropy_bonus", "kl", "reward_mean", "reward_std", "hard_fraction",
                                        "teacher_exit_step", "student_exit_step", "exit_entropy" })
                Assert.True(straight[^1].Metrics.ContainsKey(key), key);
            Assert.Equal(4, straight[^1].Metrics["hard_acc"].Length);
            Assert.All(straight, p => Assert.True(double.IsFinite(p.Loss)));

            using var cts = new CancellationTokenSource();
            var first = Train(dir, false, cts);
            var rest = Train(dir, true, null);
            Assert.Equal(2, first.Count);
            Assert.Equal(2, rest.Count);
            // bitwise: resume = straight run: the same steps on the same state
            Assert.Equal(straight[1].Loss, first[1].Loss);
            Assert.Equal(straight[2].Loss, rest[0].Loss);
            Assert.Equal(straight[3].Loss, rest[1].Loss);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
