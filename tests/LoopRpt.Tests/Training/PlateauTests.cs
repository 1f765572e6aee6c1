using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRpt.Tests.Training;

/// <summary>Issue 27 §3: Stage I until held-out loss stops improving (<see cref="PlateauRule"/>), best weights kept.</summary>
public sealed class PlateauTests
{
    [Fact]
    public void TrackerStopsAtTheEvaluationTheRuleNamesAndKeepsTheLowestLoss()
    {
        // δ = 1 %, P = 2. By hand: e1 4.00 sets the reference; e2 3.00 < 3.96 resets it to 3.00; e3 2.98 is the lowest so far
        // but not below 3.00 × 0.99 = 2.97 (wait 1); e4 2.99 (wait 2) stops. Best: e3 (step 30), not the reference e2.
        var tracker = new PlateauTracker(new PlateauRule { EvaluateEvery = 10, Patience = 2, MinRelativeDelta = 0.01, MaxSteps = 100 });
        var losses = new[] { 4.0, 3.0, 2.98, 2.99, 1.0 };
        var stops = new List<bool>();
        for (int i = 0; i < 4; i++) stops.Add(tracker.Observe(10 * (i + 1), losses[i]));
        Assert.Equal(new[] { false, false, false, true }, stops);
        Assert.Equal(new PlateauPoint(30, 2.98), tracker.Best);      // bitwise: the tracker returns the very double it was given
        Assert.Equal(4, tracker.Curve.Count);
        Assert.Equal(2, tracker.EvaluationsWithoutImprovement);
    }

    [Fact]
    public void TrackerNeverStopsWhileEveryEvaluationImprovesAndCountsNonFiniteAsNoImprovement()
    {
        var steady = new PlateauTracker(new PlateauRule { Patience = 1, MinRelativeDelta = 0.1 });
        Assert.All(new[] { 10.0, 8.9, 8.0, 7.1 }.Select((l, i) => steady.Observe(i + 1, l)), Assert.False);   // each ≥ 10 % lower
        var nan = new PlateauTracker(new PlateauRule { Patience = 1, MinRelativeDelta = 0 });
        Assert.False(nan.Observe(1, 2.0));
        Assert.True(nan.Observe(2, double.NaN));
        Assert.Equal(1, nan.Best!.Step);
    }

    [Theory]
    [InlineData(0, 3, 0.01, 100, "EvaluateEvery")]
    [InlineData(10, 0, 0.01, 100, "Patience")]
    [InlineData(10, 3, -0.1, 100, "MinRelativeDelta")]
    [InlineData(10, 3, 1.0, 100, "MinRelativeDelta")]
    [InlineData(50, 3, 0.01, 40, "MaxSteps")]
    public void RuleRefusesBadSettingsNamingThem(int every, int patience, double delta, long max, string name)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PlateauRule { EvaluateEvery = every, Patience = patience, MinRelativeDelta = delta, MaxSteps = max }.Validate());
        Assert.Equal(name, e.ParamName);
        Assert.Contains(name, e.Message);
    }

    /// <summary>Trains on a stream of token 1 and evaluates on a stream of token 2, so held-out loss rises after the first steps.</summary>
    private static (TrainingResult Result, double LossNow) Run(PlateauRule rule)
    {
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
        var source = new PackedTokenSource(Enumerable.Repeat(1, 2000).ToArray(), batchSize: 4, sequenceLength: 16, seed: 11);
        var heldOut = LoopEvaluator.Windows(Enumerable.Repeat(2, 200).ToArray(), 4, 16).ToList();
        var stage = new TrainingStage(new PretrainObjective(), rule.MaxSteps) { LearningRate = 3e-3, WarmupFraction = 0, StopOnPlateau = new HeldOutPlateau(rule, heldOut) };
        var result = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1, SpikeFactor = 0 }).Train(lm, source, [stage]);
        return (result, LoopEvaluator.EvaluateExit(lm, heldOut, ExitMode.Last).NegativeLogLikelihood);
    }

    [Fact]
    public void TrainerStopsBeforeTheCapReportsItsStepsAndKeepsTheBestWeights()
    {
        var rule = new PlateauRule { EvaluateEvery = 2, Patience = 2, MinRelativeDelta = 0, MaxSteps = 60 };
        var (result, lossNow) = Run(rule);
        var p = result.Plateau!;
        Assert.True(p.Plateaued);
        Assert.True(p.StepsTaken < rule.MaxSteps, $"stopped at {p.StepsTaken}");
        Assert.Equal(p.StepsTaken, p.Curve[^1].Step);
        Assert.Equal(p.StepsTaken, result.Meta.Stages[^1].Steps);                     // the history records the steps it took
        Assert.Equal(p.StepsTaken, result.GlobalStep);
        // With δ = 0 the reference is the best loss: the stop comes Patience evaluations after it, each no lower.
        Assert.Equal(p.BestStep + rule.Patience * rule.EvaluateEvery, p.StepsTaken);
        var best = p.Curve.Single(c => c.Step == p.BestStep);
        Assert.All(p.Curve, c => Assert.True(c.Loss >= best.Loss));
        Assert.True(p.Curve[^1].Loss > best.Loss, "the last evaluation is worse than the best");
        // The model left behind is the best step's: its held-out loss is the one measured there, not the last one.
        Tolerance.AssertClose(best.Loss, lossNow, "held-out loss of the kept weights");
        Assert.False(Tolerance.Close(p.Curve[^1].Loss, lossNow), "the last step's weights were kept");
        Assert.Contains($"plateau at step {p.StepsTaken}", p.Reason);

        var again = Run(rule).Result.Plateau!;                                          // deterministic for a fixed seed
        Assert.Equal(p.Curve.Select(c => c.Step), again.Curve.Select(c => c.Step));
        Tolerance.AssertClose(p.Curve.Select(c => c.Loss).ToArray(), again.Curve.Select(c => c.Loss).ToArray(), "held-out curve of a second run");
    }

    [Fact]
    public void TrainerStopsAtTheCapWhenPatienceIsNeverUsedUp()
    {
        var (result, _) = Run(new PlateauRule { EvaluateEvery = 3, Patience = 50, MinRelativeDelta = 0, MaxSteps = 8 });
        var p = result.Plateau!;
        Assert.False(p.Plateaued);
        Assert.Equal(8, p.StepsTaken);
        Assert.Equal(new long[] { 3, 6, 8 }, p.Curve.Select(c => c.Step));                         // every E steps, and at the cap
        Assert.Contains("cap reached (8 steps)", p.Reason);
    }

    [Fact]
    public void TrainerRefusesAPlateauStageThatIsResumedNotLastOrSizedOtherwise()
    {
        using var lm = TestUtil.TinyModel(vocab: 32, seed: 7);
        var source = new PackedTokenSource(Enumerable.Repeat(1, 500).ToArray(), 2, 16, 1);
        var heldOut = LoopEvaluator.Windows(Enumerable.Repeat(2, 100).ToArray(), 2, 16).ToList();
        var rule = new PlateauRule { EvaluateEvery = 2, MaxSteps = 4 };
        TrainingStage Stage(long steps) => new(new PretrainObjective(), steps) { StopOnPlateau = new HeldOutPlateau(rule, heldOut) };
        var notLast = Assert.Throws<ArgumentException>(() => new LoopedLmTrainer().Train(lm, source, [Stage(4), new TrainingStage(new PretrainObjective(), 2)]));
        Assert.Contains("must be the plan's last stage", notLast.Message);
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-plateau-" + Guid.NewGuid().ToString("N"));
        var resumed = Assert.Throws<ArgumentException>(() => new LoopedLmTrainer(new TrainerOptions { CheckpointDirectory = dir, Resume = true }).Train(lm, source, [Stage(4)]));
        Assert.Contains("cannot be resumed", resumed.Message);
        var sized = Assert.Throws<ArgumentException>(() => new LoopedLmTrainer().Train(lm, source, [Stage(6)]));
        Assert.Contains("MaxSteps", sized.Message);
    }
}
