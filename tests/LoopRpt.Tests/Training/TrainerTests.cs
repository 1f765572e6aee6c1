using LoopRpt.Data;
using LoopRpt.Objectives;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Training;

public class TrainerTests
{
    internal static int[] PatternTokens(int n, int vocab, int seed)
    {
        // A learnable stream: repeating arithmetic progressions with a random stride per segment.
        var rng = new Random(seed);
        var tokens = new int[n];
        int i = 0;
        while (i < n)
        {
            int stride = 1 + rng.Next(3), start = rng.Next(vocab);
            for (int k = 0; k < 16 && i < n; k++, i++) tokens[i] = (start + k * stride) % vocab;
        }
        return tokens;
    }

    private static List<TrainingProgress> Run(int steps, string? ckpt = null, bool resume = false, int logEvery = 1, double lr = 3e-3)
    {
        var reports = new List<TrainingProgress>();
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
        var source = new PackedTokenSource(PatternTokens(4000, 32, 3), batchSize: 4, sequenceLength: 32, seed: 11);
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            LogEvery = logEvery, CheckpointDirectory = ckpt, Resume = resume, CheckpointEvery = ckpt is null ? 0 : 3,
            Progress = new SyncProgress<TrainingProgress>(reports.Add),
        });
        trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), steps) { LearningRate = lr, WarmupFraction = 0.1 }]);
        return reports;
    }

    [Fact]
    public void LossFallsOnPatternText()
    {
        var reports = Run(60, logEvery: 10, lr: 1e-2);
        Assert.Equal(6, reports.Count);
        Assert.True(reports[^1].Loss < reports[0].Loss - 0.5, $"loss {reports[0].Loss} -> {reports[^1].Loss}");
        Assert.Equal(4, reports[^1].Metrics["step_loss"].Length);
    }

    /// <summary>
    /// A run stopped after <paramref name="stopAfter"/> of 10 steps and resumed equals the straight run, losses and β
    /// alike. The stage's β switch is at step 5 (LateBetaFrom 0.5 of the 10 steps the trainer hands the objective): stopped
    /// after 3 steps, the resumed run crosses the switch; stopped after 6, it starts past it.
    /// </summary>
    [Theory]
    [InlineData(6)]
    [InlineData(3)]
    public void ResumeEqualsStraightRun(int stopAfter)
    {
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            var straight = Run(10);
            // Stop after `stopAfter` steps of a 10-step plan by cancelling from the progress sink (a checkpoint is written on cancel).
            var partial = new List<TrainingProgress>();
            using (var lm = TestUtil.TinyModel(vocab: 32, seed: 7))
            {
                var source = new PackedTokenSource(PatternTokens(4000, 32, 3), 4, 32, 11);
                using var cts = new CancellationTokenSource();
                var trainer = new LoopedLmTrainer(new TrainerOptions
                {
                    LogEvery = 1, CheckpointDirectory = dir,
                    Progress = new SyncProgress<TrainingProgress>(p => { partial.Add(p); if (p.Step == stopAfter) cts.Cancel(); }),
                });
                Assert.Throws<OperationCanceledException>(() =>
                    trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), 10) { LearningRate = 3e-3, WarmupFraction = 0.1 }], cts.Token));
            }
            var resumed = Run(10, dir, resume: true);
            Assert.Equal(stopAfter, partial.Count);
            Assert.Equal(10 - stopAfter, resumed.Count);
            double[] Betas(IEnumerable<TrainingProgress> reports) => reports.Select(r => Math.Round(r.Metrics["beta"][0], 6)).ToArray();
            // bitwise: the configured betas, reported through a float32 metric and rounded to 6 places
            Assert.Equal(new[] { 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05 }, Betas(straight));
            // bitwise: resume = straight run: the same steps on the same state
            for (int i = 0; i < stopAfter; i++) Assert.Equal(straight[i].Loss, partial[i].Loss);
            for (int i = 0; i < 10 - stopAfter; i++) Assert.Equal(straight[stopAfter + i].Loss, resumed[i].Loss);
            Assert.Equal(Betas(straight.Skip(stopAfter)), Betas(resumed));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// Stage I's beta switch is keyed to the stage's own step and length, which the trainer hands the objective: a
    /// <c>new PretrainObjective()</c> that states no length of its own switches at LateBetaFrom × the stage's steps. A
    /// pretrain stage after another stage, or one continuing a trained model (base meta at step 100), starts with the early
    /// beta 0.1 and switches at half of ITS steps.
    /// </summary>
    [Theory]
    [InlineData(0L, false, 0.5, new[] { 0.1, 0.1, 0.05, 0.05 })]
    [InlineData(0L, true, 0.5, new[] { 0.1, 0.1, 0.05, 0.05 })]
    [InlineData(100L, false, 0.5, new[] { 0.1, 0.1, 0.05, 0.05 })]
    [InlineData(0L, false, 0.75, new[] { 0.1, 0.1, 0.1, 0.05 })]
    [InlineData(0L, false, 1.0, new[] { 0.1, 0.1, 0.1, 0.1 })]
    public void PretrainBetaSwitchesAtLateBetaFromOfTheStageTheTrainerRuns(long baseStep, bool afterGate, double lateBetaFrom, double[] expected)
    {
        var reports = new List<TrainingProgress>();
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
        var source = new PackedTokenSource(PatternTokens(2000, 32, 3), batchSize: 2, sequenceLength: 16, seed: 11);
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            LogEvery = 1, BaseMeta = new LoopRpt.Checkpoints.ModelMeta { Step = baseStep },
            Progress = new SyncProgress<TrainingProgress>(reports.Add),
        });
        // No length given to the objective: the stage's 4 steps are the only statement of it.
        var pretrain = new TrainingStage(new PretrainObjective(new PretrainObjectiveOptions { LateBetaFrom = lateBetaFrom }), 4) { LearningRate = 1e-3 };
        TrainingStage[] plan = afterGate ? [new TrainingStage(new GateObjective(), 3) { LearningRate = 1e-3 }, pretrain] : [pretrain];
        trainer.Train(lm, source, plan);
        var betas = reports.Where(r => r.Stage == "pretrain").Select(r => Math.Round(r.Metrics["beta"][0], 6)).ToArray();
        // bitwise: the configured beta, reported through a float32 metric and rounded to 6 places
        Assert.Equal(expected, betas);
    }
}

/// <summary>IProgress that reports synchronously on the calling thread (Progress&lt;T&gt; posts asynchronously).</summary>
internal sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
{
    public void Report(T value) => action(value);
}
