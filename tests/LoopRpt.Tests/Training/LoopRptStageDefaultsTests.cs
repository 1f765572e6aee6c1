using LoopRpt.Cli.Commands;
using LoopRpt.Hosting;
using LoopRpt.MLNet;
using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.Extensions.Configuration;

namespace LoopRpt.Tests.Training;

/// <summary>
/// A LoopRPT stage built without optimizer overrides gets the published settings (docs/method.md §4.9: weight decay 0.01,
/// cosine with 3% warmup decaying to 0, clip 1.0; β2 0.95, not stated) on every surface; other stages keep theirs.
/// </summary>
public class LoopRptStageDefaultsTests
{
    private static void AssertPublished(TrainingStage s)
    {
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.01, 0.0, 0.03, 1.0, 0.9, 0.95), (s.WeightDecay, s.MinLearningRateRatio, s.WarmupFraction, s.GradientClip, s.Beta1, s.Beta2));
    }

    private static void AssertPretraining(TrainingStage s)
    {
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.1, 0.1, 0.03, 1.0, 0.9, 0.95), (s.WeightDecay, s.MinLearningRateRatio, s.WarmupFraction, s.GradientClip, s.Beta1, s.Beta2));
    }

    [Fact]
    public void LibraryStageOfALoopRptObjective()
    {
        using var rpt = new LoopRptObjective();
        AssertPublished(new TrainingStage(rpt, 10));
        AssertPretraining(new TrainingStage(new PretrainObjective(), 10));
        var custom = new TrainingStage(rpt, 10) { WeightDecay = 0.2, MinLearningRateRatio = 0.5 };
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.2, 0.5, 0.03), (custom.WeightDecay, custom.MinLearningRateRatio, custom.WarmupFraction));
    }

    [Fact]
    public void CliLoopRptStage()
    {
        var stages = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "pretrain:4,looprpt:2,gate:3");
        try
        {
            Assert.IsType<LoopRptObjective>(stages[1].Objective);
            AssertPublished(stages[1]);
            AssertPretraining(stages[0]);
            AssertPretraining(stages[2]);
        }
        finally
        {
            foreach (var s in stages) s.Objective.Dispose();
        }

        // Options given on the command line apply to every stage.
        var given = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "pretrain:4,looprpt:2", "--weight-decay", "0.2", "--warmup", "0.1", "--clip", "0.5");
        try
        {
            // bitwise: a setting read back as given, not computed
            Assert.All(given, s => Assert.Equal((0.2, 0.1, 0.5), (s.WeightDecay, s.WarmupFraction, s.GradientClip)));
        }
        finally
        {
            foreach (var s in given) s.Objective.Dispose();
        }
    }

    [Fact]
    public void MlNetLoopRptStage()
    {
        var factory = StageDescriptor.LoopRpt(5);
        var initialized = new StageDescriptor { Steps = 5 };
        initialized.Kind = StageKind.LoopRpt;                                    // kind set after construction
        foreach (var d in new[] { factory, initialized })
        {
            var stage = LoopedLmTrainerEstimator.ToTrainingStage(d, 5, "Stages[0]", new ObjectiveKindRegistry(), factory: null);
            using var objective = Assert.IsType<LoopRptObjective>(stage.Objective);
            AssertPublished(stage);
        }
        // bitwise: a setting read back as given, not computed
        Assert.Equal(TrainingStage.LoopRptDefaults.LearningRate, factory.LearningRate);
        using (var pretrain = new PretrainObjective())
            AssertPretraining(LoopedLmTrainerEstimator.ToTrainingStage(StageDescriptor.Pretrain(5), 5, "Stages[0]", new ObjectiveKindRegistry(), _ => pretrain));
        var overridden = StageDescriptor.LoopRpt(5);
        overridden.WeightDecay = 0.3;
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.3, 0.0), (overridden.WeightDecay, overridden.MinLearningRateRatio));
    }

    [Fact]
    public void HostingLoopRptStage()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Stages:0:Kind"] = "pretrain", ["Stages:0:Steps"] = "6",
            ["Stages:1:Steps"] = "4", ["Stages:1:Kind"] = "LoopRpt",
            ["Stages:2:Kind"] = "looprpt", ["Stages:2:Steps"] = "4", ["Stages:2:WeightDecay"] = "0.05",
        }).Build();
        var options = config.Get<RetrainingOptions>()!;
        using var rpt = new LoopRptObjective();
        using var pretrain = new PretrainObjective();
        AssertPretraining(options.Stages[0].ToTrainingStage(pretrain));
        AssertPublished(options.Stages[1].ToTrainingStage(rpt));
        AssertPublished(new StageOptions { Kind = StageObjectiveFactory.LoopRpt, Steps = 4 }.ToTrainingStage(rpt));
        var overridden = options.Stages[2].ToTrainingStage(rpt);
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.05, 0.0), (overridden.WeightDecay, overridden.MinLearningRateRatio));
    }
}
