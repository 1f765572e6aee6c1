using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Experiments;
using LoopRpt.Objectives;
using LoopRpt.Tests.Training;
using LoopRpt.Training;
using LoopRpt.Model;

namespace LoopRpt.Tests.Experiments;

public sealed class LoopRptExperimentTests
{
    private const int Vocab = 32;

    private static string TempDir() => TestUtil.TempDir("looprpt-experiment-tests");

    /// <summary>A tiny base model saved as a model directory (as if after Stage I + gate at global step 5).</summary>
    private static string SaveBase(string root)
    {
        var dir = Path.Combine(root, "base");
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 3);
        ModelDirectory.Save(dir, lm, new ModelMeta { Step = 5, Stages = [new("pretrain", 4), new("gate", 1)] });
        return dir;
    }

    private static readonly int[] TrainTokens = TrainerTests.PatternTokens(3000, Vocab, 3);

    private static ITokenBatchSource Source(long seed) => new PackedTokenSource(TrainTokens, batchSize: 2, sequenceLength: 16, seed: seed);

    private static Dictionary<string, IReadOnlyList<TokenBatch>> EvalSets() => new()
    {
        ["heldout"] = LoopEvaluator.Windows(TrainerTests.PatternTokens(400, Vocab, 99), 4, 16).ToList(),
        ["k=1"] = LoopEvaluator.Windows(TrainerTests.PatternTokens(200, Vocab, 98), 4, 16).ToList(),
    };

    private static ExperimentOptions Options(List<string>? log = null) => new()
    {
        Seeds = 2, Steps = 2, QValues = [0.2, 0.5, 0.9, 1.0], LogEvery = 1, CheckpointEvery = 0, Log = log is null ? null : log.Add,
    };

    [Fact]
    public void RunsEveryArmAndSeedWritesTheFilesAndResumesWithoutRetraining()
    {
        var root = TempDir();
        var baseDir = SaveBase(root);
        var output = Path.Combine(root, "experiment");
        var reports = new List<TrainingProgress>();
        var log = new List<string>();
        var experiment = new LoopRptExperiment(baseDir, Source, EvalSets(), Options(log));
        // The all-tokens variant reads out every target, not the hardest 20 %: more FLOPs per step, so its own control.
        Assert.Equal(["stage1-equal-steps", "stage1-equal-compute", "stage1-equal-compute-looprpt-all-tokens", "looprpt", "looprpt-all-tokens"], experiment.Arms.Select(a => a.Name));
        Assert.All(experiment.Plan(output), r => Assert.False(r.Done));

        var first = experiment.Run(output, new SyncProgress<TrainingProgress>(reports.Add));

        Assert.Equal(10, first.RunsTrained);
        foreach (var f in new[] { "report.md", "results.csv", "pareto-heldout.svg", "pareto-k_1.svg", "cost.json", "experiment.json" })
            Assert.True(File.Exists(Path.Combine(output, f)), f);
        Assert.NotNull(first.Cost);
        Assert.True(first.Cost!.Ratio > 0, $"ratio {first.Cost.Ratio}");
        Assert.Equal(Math.Max(1, (long)Math.Round(2 * first.Cost.Ratio, MidpointRounding.AwayFromZero)), first.Cost.EqualComputeSteps);

        var csv = File.ReadAllLines(Path.Combine(output, "results.csv"));
        Assert.Equal("eval_set,arm,seed,bucket,kind,x,accuracy,mean_exit_step", csv[0]);
        foreach (var set in new[] { "heldout", "k=1" })
        {
            Assert.Contains(csv, l => l.StartsWith($"{set},base,0,Hard,qexit,0.5,", StringComparison.Ordinal));
            foreach (var arm in experiment.Arms)
                foreach (var seed in new[] { 1, 2 })
                {
                    Assert.Contains(csv, l => l.StartsWith($"{set},{arm.Name},{seed},All,step,1,", StringComparison.Ordinal));
                    Assert.Contains(csv, l => l.StartsWith($"{set},{arm.Name},{seed},Hard,qexit,1,", StringComparison.Ordinal));
                }
        }
        // 2 sets × 11 runs (base + 5 arms × 2 seeds) × 4 buckets × (4 steps + 4 q) rows + header.
        Assert.Equal(1 + 2 * 11 * 4 * 8, csv.Length);

        // Training progress names the run; each arm trained its steps (equal compute: the measured multiple).
        Assert.Contains(reports, p => p.Stage == "looprpt/seed-2" && p.Step == 2);
        Assert.Contains(reports, p => p.Stage == "stage1-equal-compute/seed-1" && p.Step == first.Cost.EqualComputeSteps);
        var plan = experiment.Plan(output);
        Assert.All(plan, r => Assert.True(r.Done));
        Assert.Equal(reports.Select(p => p.StageIndex).Distinct().Order(), plan.Select(r => r.Index));

        // Each run kept its model (history appended to the base's) and dropped its checkpoints.
        var model = ModelDirectory.ReadMeta(Path.Combine(output, "runs", "looprpt", "seed-1", "model"));
        Assert.Equal(["pretrain", "gate", "looprpt"], model.Stages.Select(s => s.Name));
        Assert.Equal(7, model.Step);
        Assert.False(Directory.Exists(Path.Combine(output, "runs", "looprpt", "seed-1", "checkpoints")));

        var report = File.ReadAllText(Path.Combine(output, "report.md"));
        Assert.Contains("looprpt − stage1-equal-steps at s1, Hard (heldout):", report);
        Assert.Contains("(2 seeds; 95 % CI", report);
        Assert.Contains("![Pareto curves with seed bands, heldout](pareto-heldout.svg)", report);
        Assert.Contains("Compute: one LoopRPT step (published) costs", report);
        Assert.Contains("## Premise check: do the base model's later loops beat loop 1?", report);
        Assert.Equal(2, first.Premise.Count);
        Assert.True(report.IndexOf("## Premise check", StringComparison.Ordinal) < report.IndexOf("## Settings", StringComparison.Ordinal), "the premise check opens the report");
        Assert.Contains("Holm", report);
        Assert.All(first.Timings, t => Assert.True(t.Seconds > 0 && t.Steps > 0, t.Arm));
        Assert.Contains("<polygon", File.ReadAllText(Path.Combine(output, "pareto-heldout.svg")));
        Assert.Equal(2 * 4 * 5, first.Verdicts.Count);                    // sets × (2 LoopRPT arms × 2 controls) × claims

        // Second run: nothing is retrained, the results are the same.
        var again = new List<TrainingProgress>();
        log.Clear();
        var second = new LoopRptExperiment(baseDir, Source, EvalSets(), Options(log)).Run(output, new SyncProgress<TrainingProgress>(again.Add));
        Assert.Empty(again);
        Assert.Equal(0, second.RunsTrained);
        Assert.Contains(log, l => l.Contains("done earlier", StringComparison.Ordinal));
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(output, "results.csv")));
        Assert.Equal(first.Cost.Arms.Select(a => (a.Arm, a.Steps)), second.Cost!.Arms.Select(a => (a.Arm, a.Steps)));
        Assert.Equal(first.Cost.Ratio, second.Cost.Ratio);                 // bitwise: the same FLOP count from the same inputs
        Assert.Equal(first.Verdicts.Select(v => v.Text), second.Verdicts.Select(v => v.Text));

        // Other settings in the same folder are refused before any training.
        var changed = Options();
        changed.Steps = 3;
        var e = Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, EvalSets(), changed).Run(output));
        Assert.Contains("steps: was 2, now 3", e.Message);
    }

    [Fact]
    public void AnInterruptedRunResumesFromItsCheckpoint()
    {
        var root = TempDir();
        var baseDir = SaveBase(root);
        var output = Path.Combine(root, "experiment");
        var options = Options();
        options.Seeds = 1;
        options.Steps = 3;
        options.EqualCompute = false;
        options.Variants = [];
        options.CheckpointEvery = 1;
        using var cts = new CancellationTokenSource();
        // Cancel once LoopRPT has done its first step (checkpointed every step).
        var progress = new SyncProgress<TrainingProgress>(p => { if (p.Stage == "looprpt/seed-1") cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => new LoopRptExperiment(baseDir, Source, EvalSets(), options).Run(output, progress, cts.Token));
        Assert.True(File.Exists(Path.Combine(output, "runs", "stage1-equal-steps", "seed-1", "evaluation.json")));
        Assert.False(File.Exists(Path.Combine(output, "runs", "looprpt", "seed-1", "evaluation.json")));
        Assert.NotNull(new CheckpointManager(Path.Combine(output, "runs", "looprpt", "seed-1", "checkpoints")).Latest());

        var log = new List<string>();
        options.Log = log.Add;
        var reports = new List<TrainingProgress>();
        var result = new LoopRptExperiment(baseDir, Source, EvalSets(), options).Run(output, new SyncProgress<TrainingProgress>(reports.Add));
        Assert.Equal(1, result.RunsTrained);
        Assert.Contains(log, l => l.StartsWith("looprpt/seed-1: resuming at step", StringComparison.Ordinal));
        Assert.DoesNotContain(reports, p => p.Stage.StartsWith("stage1", StringComparison.Ordinal));
        Assert.Equal(3, reports[^1].Step);
        Assert.True(reports.First().Step > 1, "the resumed run should not start again at step 1");
        Assert.True(result.Cost!.Ratio > 0);
        Assert.Equal(3, result.Runs.Count);                                // base + 2 arms × 1 seed
    }

    [Fact]
    public void EveryArmsOptimizerIsThePublishedLoopRptTableWithTheExperimentsLearningRate()
    {
        var o = new ExperimentOptions();
        // bitwise: settings copied from the core's table, not computed
        Assert.Equal(OptimizerDefaults.LoopRpt with { LearningRate = 1e-4, Beta2 = 0.95 }, o.Optimizer);
        o.LearningRate = 3e-4;                                            // the learning rate is the optimizer's, not a second copy
        // bitwise: a setting read back as given
        Assert.Equal(OptimizerDefaults.LoopRpt with { LearningRate = 3e-4, Beta2 = 0.95 }, o.Optimizer);
        Assert.Throws<ArgumentNullException>(() => o.Optimizer = null!);

        // Checked by the core's one stage check: its parameter names and messages.
        o.Optimizer = o.Optimizer with { WeightDecay = -1 };
        var e = Assert.Throws<ArgumentOutOfRangeException>(o.Validate);
        Assert.Equal(("WeightDecay", "WeightDecay must be non-negative and finite."), (e.ParamName, e.Message.Split(" (Parameter")[0].Split(Environment.NewLine)[0]));
        o.Optimizer = ExperimentOptions.Defaults.Optimizer with { Beta2 = 1 };
        Assert.Equal("Beta2", Assert.Throws<ArgumentOutOfRangeException>(o.Validate).ParamName);
    }

    [Fact]
    public void OptionsAndInputsAreValidatedBeforeTraining()
    {
        var root = TempDir();
        var baseDir = SaveBase(root);
        var sets = EvalSets();

        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => new LoopRptExperiment(baseDir, Source, sets, new ExperimentOptions { Seeds = 0 }));
        Assert.Equal("Seeds", e1.ParamName);
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => new LoopRptExperiment(baseDir, Source, sets, new ExperimentOptions { ReportQ = 0.55 }));
        Assert.Equal("ReportQ", e2.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopRptExperiment(baseDir, Source, sets, new ExperimentOptions { LearningRate = -1 }));
        var e3 = Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, sets,
            new ExperimentOptions { Variants = [new ExperimentVariant("looprpt", new LoopRptObjectiveOptions())] }));
        Assert.Contains("taken by a built-in arm", e3.Message);
        Assert.Throws<ArgumentException>(() => new LoopRptExperiment(Path.Combine(root, "missing"), Source, sets));
        Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, new Dictionary<string, IReadOnlyList<TokenBatch>>()));
        Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, new Dictionary<string, IReadOnlyList<TokenBatch>> { ["a/b"] = sets["heldout"] }));
        var outOfVocab = LoopEvaluator.Windows(Enumerable.Range(0, 40).Select(i => i % 40).ToArray(), 2, 16).ToList();
        var e4 = Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, new Dictionary<string, IReadOnlyList<TokenBatch>> { ["x"] = outOfVocab }));
        Assert.Contains("outside the base model's vocabulary", e4.Message);

        var file = Path.Combine(root, "taken.txt");
        File.WriteAllText(file, "not a folder");
        int batchesAsked = 0;
        var experiment = new LoopRptExperiment(baseDir, s => { batchesAsked++; return Source(s); }, sets);
        var e5 = Assert.Throws<ArgumentException>(() => experiment.Run(file));
        Assert.Contains("is an existing file", e5.Message);
        Assert.Throws<ArgumentException>(() => experiment.Run(Path.Combine(file, "sub")));
        Assert.Equal(0, batchesAsked);
    }

    [Fact]
    public void EqualComputeControlsAreSizedByEachArmsFlops()
    {
        var root = TempDir();
        var baseDir = SaveBase(root);
        var options = Options();
        options.Steps = 3;
        options.Variants = [ExperimentVariant.AllTokens(), ExperimentVariant.Parse("noisy:sigma=0.3")];
        var experiment = new LoopRptExperiment(baseDir, Source, EvalSets(), options);
        // The sigma variant costs what the published arm costs: it shares its control; the all-tokens variant gets one.
        Assert.Equal(["stage1-equal-steps", "stage1-equal-compute", "stage1-equal-compute-looprpt-all-tokens", "looprpt", "looprpt-all-tokens", "noisy"],
                     experiment.Arms.Select(a => a.Name));

        // The batches: 2 rows of 16 positions, every target real; the published cut keeps ⌈15 × 0.2⌉ = 3 per row.
        var config = ModelDirectory.ReadConfig(baseDir);
        double stage1 = StepFlops.Stage1(config, 2, 16).Total;
        double published = StepFlops.LoopRpt(config, [16, 16], 16, new LoopRptObjectiveOptions()).Total;
        double all = StepFlops.LoopRpt(config, [16, 16], 16, new LoopRptObjectiveOptions { HardTokens = HardTokenMode.All }).Total;
        Assert.True(all > published && published > 3 * stage1, $"{stage1} {published} {all}");
        var cost = experiment.Compute();
        Assert.Equal("FLOPs", cost.Source);
        Tolerance.AssertClose(published / stage1, cost.Ratio, "ratio");
        Assert.Equal((long)Math.Round(3 * published / stage1, MidpointRounding.AwayFromZero), cost.EqualComputeSteps);
        Assert.Equal(cost.EqualComputeSteps, cost.Of("stage1-equal-compute").Steps);
        Assert.Equal((long)Math.Round(3 * all / stage1, MidpointRounding.AwayFromZero), cost.Of("stage1-equal-compute-looprpt-all-tokens").Steps);
        Assert.Equal(3, cost.Of("noisy").Steps);
        Tolerance.AssertClose(published, cost.Of("noisy").Flops.Total, "noisy costs the published FLOPs");
        Tolerance.AssertClose(stage1, cost.Of("stage1-equal-compute").Flops.Total, "a control step is a Stage I step");

        // The plan trains those steps; the verdicts of each arm use its own control.
        var plan = experiment.Plan(Path.Combine(root, "experiment"));
        Assert.Equal(cost.Of("stage1-equal-compute-looprpt-all-tokens").Steps, plan.First(r => r.Arm == "stage1-equal-compute-looprpt-all-tokens").Steps);
        Assert.Equal(cost.EqualComputeSteps, plan.First(r => r.Arm == "stage1-equal-compute").Steps);
        Assert.Equal("stage1-equal-compute-looprpt-all-tokens", ExperimentArm.EqualComputeControlOf(experiment.Arms, "looprpt-all-tokens")!.Name);
        Assert.Equal("stage1-equal-compute", ExperimentArm.EqualComputeControlOf(experiment.Arms, "noisy")!.Name);

        // A given ratio: one control for every arm.
        options.CostRatio = 2.5;
        var given = new LoopRptExperiment(baseDir, Source, EvalSets(), options);
        Assert.Single(given.Arms, a => a.Kind == ArmKind.Stage1EqualCompute);
        Assert.Equal(8, given.Compute().EqualComputeSteps);              // round(3 × 2.5), away from zero
        var e = Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseDir, Source, EvalSets(),
            new ExperimentOptions { Variants = [ExperimentVariant.Parse("stage1-equal-compute-x:g=4")] }));
        Assert.Contains("prefix of the equal-compute controls", e.Message);
    }

    [Fact]
    public void SeveralBaseModelsPairWithinBaseAndSeedAndTheSpreadCoversThem()
    {
        var root = TempDir();
        var baseA = SaveBase(root);
        var baseB = Path.Combine(root, "base-2");
        using (var lm = TestUtil.TinyModel(vocab: Vocab, seed: 4))
            ModelDirectory.Save(baseB, lm, new ModelMeta { Step = 5, Stages = [new("pretrain", 4), new("gate", 1)] });
        var output = Path.Combine(root, "experiment");
        var options = Options();
        options.Steps = 1;
        options.EqualCompute = false;
        options.Variants = [];
        var experiment = new LoopRptExperiment([baseA, baseB], Source, EvalSets(), options);
        var plan = experiment.Plan(output);
        Assert.Equal(8, plan.Count);                                       // 2 bases × 2 seeds × 2 arms
        Assert.Contains(plan, r => r.Label == "looprpt/base-2/seed-1");

        var result = experiment.Run(output);
        Assert.Equal(2, result.Bases);
        Assert.True(File.Exists(Path.Combine(output, "by-base", "b2", "runs", "looprpt", "seed-2", "evaluation.json")));
        Assert.Equal([1, 2], result.Runs.Where(r => r.Arm == "base").Select(r => r.Seed));
        Assert.Equal([1, 2, 3, 4], result.Runs.Where(r => r.Arm == "looprpt").Select(r => r.Seed));
        Assert.Equal(2, result.Summary.Get("heldout", "base", "All").StepAccuracy[0].Count);
        Assert.Equal(2, result.Premise[0].Bases);

        // The paired difference at s1 over the 4 replicates, from the runs by hand.
        double Acc(string arm, int r) => result.Runs.Single(x => x.Arm == arm && x.Seed == r).Evaluations["heldout"]["All"].StepAccuracy[0];
        var diffs = Enumerable.Range(1, 4).Select(r => Acc("looprpt", r) - Acc("stage1-equal-steps", r)).ToArray();
        var d = result.Summary.Difference("heldout", "looprpt", "stage1-equal-steps", "All")!.StepAccuracy[0];
        Assert.Equal(4, d.Count);
        Tolerance.AssertClose(diffs.Average(), d.Mean, "mean over replicates");
        Tolerance.AssertClose(Math.Sqrt(diffs.Sum(x => (x - diffs.Average()) * (x - diffs.Average())) / 3), d.Std, "std over replicates");
        // Base 2's runs start from base 2: its equal-steps run differs from base 1's for the same seed.
        double Nll(int r) => result.Runs.Single(x => x.Arm == "stage1-equal-steps" && x.Seed == r).Evaluations["heldout"]["All"].StepNegativeLogLikelihood[0];
        Assert.False(Tolerance.Close(Nll(1), Nll(3)), $"{Nll(1)} vs {Nll(3)}");
        Assert.Contains("2 base models × 2 seeds = 4 replicates", File.ReadAllText(result.ReportPath));
        Assert.Contains("(4 replicates; 95 % CI", result.Verdicts[0].Text);

        // The folder is laid out for two bases: a one-base experiment there is refused before training.
        var e = Assert.Throws<ArgumentException>(() => new LoopRptExperiment(baseA, Source, EvalSets(), options).Run(output));
        Assert.Contains("several base models", e.Message);
        Assert.Throws<ArgumentException>(() => new LoopRptExperiment([baseA, baseA], Source, EvalSets(), options));
    }

    [Fact]
    public void VariantsParseFromText()
    {
        var v = ExperimentVariant.Parse("wide:hard=all,g=4,Sigma=0.3,noise=dropout,lr=3e-4");
        Assert.Equal("wide", v.Name);
        // bitwise: settings parsed from the variant text, not computed
        Assert.Equal(3e-4, v.LearningRate);
        Assert.Equal(HardTokenMode.All, v.Options.HardTokens);
        Assert.Equal(4, v.Options.Rollouts);
        Assert.Equal(0.3, v.Options.Sigma);
        Assert.Equal(NoiseKind.Dropout, v.Options.Noise);
        Assert.Equal("lr=0.0003, HardTokens=All, Rollouts=4, Sigma=0.3, Noise=Dropout", v.Describe());
        Assert.Equal("published defaults", ExperimentVariant.Parse("plain").Describe());
        Assert.Throws<FormatException>(() => ExperimentVariant.Parse("x:colour=red"));
        Assert.Throws<FormatException>(() => ExperimentVariant.Parse("x:g=many"));
        Assert.Throws<FormatException>(() => ExperimentVariant.Parse("x:hard=3"));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExperimentVariant.Parse("x:g=1"));
        Assert.Throws<ArgumentException>(() => ExperimentVariant.Parse("bad name:g=4"));
    }
}
