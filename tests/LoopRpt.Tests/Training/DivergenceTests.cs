using System.Text.Json.Nodes;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Training;

/// <summary>
/// The trainer's loss-spike rule end to end: a spiking run stops with <see cref="TrainingDivergedException"/>, the
/// checkpoints whose following loss was not sane are removed, the kept one is sane by an independent evaluation, and a
/// normal run is not touched.
/// </summary>
public sealed class DivergenceTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "looprpt-diverge-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private static PackedTokenSource Source() => new(TrainerTests.PatternTokens(2000, 32, 1), 2, 16, 1);

    [Fact]
    public void ASpikingLossStopsTheRunAndTheLastSaneCheckpointIsKept()
    {
        using var lm = TestUtil.TinyModel(vocab: 32);
        var ckpt = Path.Combine(_dir, "ckpt");
        var reports = new List<TrainingProgress>();
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            CheckpointDirectory = ckpt, CheckpointEvery = 2, KeepCheckpoints = 1, LogEvery = 2,
            Progress = new SyncProgress<TrainingProgress>(reports.Add),
        });
        // The logged loss is 100 × too large from step 9 on (the training itself is untouched): the report at step 10
        // (steps 9 and 10) is the first spike, so the checkpoint of step 8 — whose weights gave that loss — is suspect.
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Train(lm, Source(), [new TrainingStage(new InflateLossFrom(new PretrainObjective(), 9), 20)]));

        Assert.Equal(DivergenceKind.LossSpike, e.Kind);
        Assert.Equal(14, e.StageStep);                                      // patience 3: spikes at 10, 12, 14
        Assert.Equal([0, 0, 0, 0, 1, 2, 3], reports.Select(r => r.SpikeStreak));
        Assert.Contains("spike_streak=3", reports[^1].ToString());
        Assert.DoesNotContain("spike_streak", reports[0].ToString());
        Assert.EndsWith(CheckpointManager.StepDirectoryName(6), e.LastGoodCheckpoint);
        Assert.Equal(1, e.RemovedCheckpoints);
        Assert.Contains(e.LastGoodCheckpoint!, e.Message);
        Assert.Equal(e.LastGoodCheckpoint, new CheckpointManager(ckpt).Latest());
        // Keep = 1, yet step 6 survived the saves of step 8 (it was the last confirmed one); step 8 is gone.
        Assert.Equal([CheckpointManager.StepDirectoryName(6)], Directory.GetDirectories(ckpt).Select(Path.GetFileName));
        // The rule's window travels with the checkpoint (seed + reports 2, 4, 6), so a resume judges as a straight run.
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(e.LastGoodCheckpoint!, LoopedLmTrainer.TrainerStateFile)))!;
        Assert.Equal(4, state["spike_history"]!.AsArray().Count);
    }

    [Fact]
    public void ANormalRunIsUnaffectedByTheRule()
    {
        // The most sensitive setting (a report every step, batches of 2 × 16 tokens, warmup and a high rate), from a fresh model.
        (List<TrainingProgress> Reports, float[] Weights) Run(double spikeFactor)
        {
            using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
            var reports = new List<TrainingProgress>();
            var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1, SpikeFactor = spikeFactor, Progress = new SyncProgress<TrainingProgress>(reports.Add) });
            var result = trainer.Train(lm, Source(), [
                new TrainingStage(new PretrainObjective(), 40) { LearningRate = 1e-2, WarmupFraction = 0.2 },
                new TrainingStage(new GateObjective(), 10) { LearningRate = 1e-2 },
            ]);
            Assert.True(result.Completed);
            return (reports, TestUtil.ToArray(lm.Backbone.embed_tokens.weight!));
        }
        var (on, weightsOn) = Run(TrainerOptions.Defaults.SpikeFactor);
        var (off, weightsOff) = Run(0);
        Assert.Equal(50, on.Count);
        Assert.All(on, r => Assert.Equal(0, r.SpikeStreak));
        // bitwise: the rule reads, never changes, the run: the same computation twice
        Assert.Equal(off.Select(r => r.Loss), on.Select(r => r.Loss));
        Assert.Equal(weightsOff, weightsOn);
        Assert.True(on[39].Loss < on[0].Loss, $"loss {on[0].Loss} -> {on[39].Loss}");
    }

    [Fact]
    public void ATooHighLearningRateStopsAndTheKeptCheckpointIsSaneByAnIndependentEvaluation()
    {
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 3);
        var ckpt = Path.Combine(_dir, "ckpt");
        var reports = new List<TrainingProgress>();
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            CheckpointDirectory = ckpt, CheckpointEvery = 4, LogEvery = 2, Progress = new SyncProgress<TrainingProgress>(reports.Add),
        });
        // A sane stage, then the same objective at lr 10 (the issue's --lr 1e6 in spirit: losses of hundreds, or NaN).
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Train(lm, Source(), [
            new TrainingStage(new PretrainObjective(), 24) { LearningRate = 1e-2 },
            new TrainingStage(new PretrainObjective(), 24) { LearningRate = 10 },
        ]));
        Assert.Equal("pretrain", e.Stage);
        Assert.True(e.GlobalStep <= 24 + 12, $"stopped at {e.GlobalStep}");
        Assert.EndsWith(CheckpointManager.StepDirectoryName(24), e.LastGoodCheckpoint);   // the end of the sane stage
        Assert.Equal(e.LastGoodCheckpoint, new CheckpointManager(ckpt).Latest());

        // Independent evaluation: the kept checkpoint, loaded from disk and scored at its last loop by the inference code,
        // has about the loss the first stage logged last, while the diverged model in memory does not.
        double logged = reports.Where(r => r.GlobalStep == 24).Single().Metrics["step_loss"][^1];
        double NllOf(OuroForCausalLM m)
        {
            var tokens = TrainerTests.PatternTokens(2000, 32, 1);
            var windows = Enumerable.Range(0, 16).Select(i => (IReadOnlyList<long>)tokens.Skip(i * 64).Take(64).Select(t => (long)t).ToArray()).ToList();
            return new AdaptiveExitScorer(m, new AdaptiveExitScorerOptions { Exit = ExitMode.Last }).Evaluate(windows).MeanNll;
        }
        using var kept = ModelDirectory.Load(e.LastGoodCheckpoint!).Model;
        double nll = NllOf(kept);
        Assert.True(Math.Abs(nll - logged) < 0.5, $"kept checkpoint: NLL {nll}, logged {logged}");
        Assert.True(nll < Math.Log(32) + 0.5, $"kept checkpoint NLL {nll} is worse than a fresh model's (about ln 32 = {Math.Log(32):F3})");
        double diverged;
        try { diverged = NllOf(lm); }
        catch (NotFiniteNumberException) { diverged = double.PositiveInfinity; }
        Assert.True(diverged > 3 * nll, $"diverged model NLL {diverged} vs kept {nll}");
    }

    [Fact]
    public void NoCheckpointIsKeptWhenNoneWasSane()
    {
        // The first update at lr 10 wrecks a fresh model: the baseline read of step 0 catches it in the first report,
        // before any checkpoint could be written (none is written during a streak).
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 3);
        var ckpt = Path.Combine(_dir, "ckpt");
        var trainer = new LoopedLmTrainer(new TrainerOptions { CheckpointDirectory = ckpt, CheckpointEvery = 1, LogEvery = 4 });
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Train(lm, Source(), [new TrainingStage(new PretrainObjective(), 40) { LearningRate = 10 }]));
        Assert.Null(e.LastGoodCheckpoint);
        Assert.Contains("No checkpoint with a sane loss was written", e.Message);
        Assert.Null(new CheckpointManager(ckpt).Latest());
    }

    /// <summary>Multiplies the logged "loss" metric from a global step on; gradients and training are unchanged.</summary>
    internal sealed class InflateLossFrom(ITrainingObjective inner, long from, double factor = 100) : ITrainingObjective
    {
        public string Name => inner.Name;
        public IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> TrainableParameters(OuroForCausalLM lm) => inner.TrainableParameters(lm);
        public void Attach(OuroForCausalLM lm) => inner.Attach(lm);
        public void BeginStage(long stageSteps) => inner.BeginStage(stageSteps);
        public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
        {
            var o = inner.Compute(lm, inputs, targets, step, stageStep, microStep);
            if (step < from) return o;
            var metrics = o.Metrics.ToDictionary(kv => kv.Key, kv => kv.Key == "loss" ? kv.Value * factor : kv.Value);
            return new ObjectiveOutput(o.Loss, metrics);
        }
        public void AfterOptimizerStep(OuroForCausalLM lm, long step) => inner.AfterOptimizerStep(lm, step);
        public IEnumerable<(string Name, Tensor Tensor)> StateTensors() => inner.StateTensors();
        public void LoadState(Func<string, Tensor, bool> copyInto) => inner.LoadState(copyInto);
        public void Dispose() => inner.Dispose();
    }
}
