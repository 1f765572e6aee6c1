using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Experiments;
using LoopRpt.Objectives;
using LoopRpt.Tests.Training;
using LoopRpt.Training;

namespace LoopRpt.Tests.Experiments;

public sealed class LoopRptExperimentTests
{
    private const int Vocab = 32;

    private static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "looprpt-experiment-tests", Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(d);
        return d;
    }

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
        Assert.Equal(["stage1-equal-steps", "stage1-equal-compute", "looprpt", "looprpt-all-tokens"], experiment.Arms.Select(a => a.Name));
        Assert.All(experiment.Plan(output), r => Assert.False(r.Done));

        var first = experiment.Run(output, new SyncProgress<TrainingProgress>(reports.Add));

        Assert.Equal(8, first.RunsTrained);
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
        // 2 sets × 9 runs (base + 4 arms × 2 seeds) × 4 buckets × (4 steps + 4 q) rows + header.
        Assert.Equal(1 + 2 * 9 * 4 * 8, csv.Length);

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
        Assert.Contains("Cost ratio: one LoopRPT step costs", report);
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
        Assert.Equal(first.Cost, second.Cost);                             // bitwise: the second run reads the first run's stored results
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
