using LoopRpt.MLNet;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Tests.Training;
using LoopRpt.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

public class TrainerWorkoutTests
{
    private const int Vocab = 40;

    internal static LoopedLmTrainerEstimator.Options Tiny(long pretrain = 6, long gate = 2, string? ckpt = null) => new()
    {
        Config = MlNetTestData.TinyConfig(Vocab), VocabularySize = Vocab, BatchSize = 4, SequenceLength = 16, Seed = 3, LogEvery = 1,
        SeparatorTokenId = 0, CheckpointDirectory = ckpt,
        Stages = gate > 0 ? [StageDescriptor.Pretrain(pretrain, 3e-3), StageDescriptor.Gate(gate, 1e-2)] : [StageDescriptor.Pretrain(pretrain, 3e-3)],
    };

    [Fact]
    public void SchemaLogAndProgress()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("LoopRpt")) lock (log) log.Add(e.Message); };
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        var reports = new List<TrainingProgress>();
        var options = Tiny();
        options.Progress = new SyncProgress<TrainingProgress>(reports.Add);
        var estimator = ml.LoopRpt().TrainLoopedLm(options);
        var shape = estimator.GetOutputSchema(MlNetTestData.Shape(data.Schema));
        using var scorer = estimator.Fit(data);
        Assert.Equal(MlNetTestData.Describe(shape), MlNetTestData.DescribeAsShape(scorer.Transform(data).Schema));
        Assert.Equal(8, reports.Count);
        Assert.Equal(["pretrain", "gate"], reports.Select(r => r.Stage).Distinct());
        Assert.True(scorer.TrainingResult!.Completed);
        Assert.Equal(8, scorer.Meta.Step);
        Assert.Contains(log, l => l.Contains("LoopRpt progress: stage=pretrain step=1/6"));
        Assert.Contains(log, l => l.Contains("LoopRpt train: completed=True global_step=8"));
        Assert.Equal(3, options.Seed);        // the caller's options are not mutated
    }

    [Fact]
    public void SameSeedSameModelAndCustomStageHook()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        int calls = 0;
        float[] Run(StageKind kind)
        {
            var o = Tiny(gate: 0);
            o.Stages = [new StageDescriptor { Kind = kind, CustomKind = kind == StageKind.Custom ? "hooked" : null, Steps = 4, LearningRate = 3e-3 }];
            o.ObjectiveKinds.Add(new ObjectiveKind<PretrainObjectiveOptions>("hooked", (options, steps) => { calls++; return new PretrainObjective(options); }));
            using var s = ml.LoopRpt().TrainLoopedLm(o).Fit(data);
            return s.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
        }
        var a = Run(StageKind.Pretrain);
        var b = Run(StageKind.Pretrain);
        // bitwise: same seed, same code, same shapes: the same computation twice
        Assert.Equal(a, b);
        Assert.Equal(0, calls);
        var c = Run(StageKind.Custom);
        Assert.Equal(1, calls);
        Assert.Equal(a, c);                   // bitwise: the hook's objective is the same objective, same seed
    }

    [Fact]
    public void ObjectiveOptionsOfTheWrongTypeAreAnError()
    {
        var ml = new MLContext(seed: 1);
        var cat = ml.LoopRpt();
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        LoopedLmTrainerEstimator.Options With(StageKind kind, object? options)
        {
            var o = Tiny(gate: 0);
            o.Stages = [StageDescriptor.Pretrain(2, 3e-3), new StageDescriptor { Kind = kind, Steps = 2, LearningRate = 3e-3, ObjectiveOptions = options }];
            return o;
        }

        // No factory: refused when the estimator is created, naming the stage, the expected and the given type.
        var e = Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(With(StageKind.Gate, new PretrainObjectiveOptions())));
        Assert.Contains("Stages[1] (Gate): ObjectiveOptions of a gate stage must be GateObjectiveOptions, but got PretrainObjectiveOptions.", e.Message);
        Assert.Equal("ObjectiveOptions", e.ParamName);
        Assert.Contains("must be PretrainObjectiveOptions, but got GateObjectiveOptions",
            Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(With(StageKind.Pretrain, new GateObjectiveOptions()))).Message);
        Assert.Contains("must be LoopRptObjectiveOptions, but got String",
            Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(With(StageKind.LoopRpt, "Rollouts=4"))).Message);

        // The right types still train.
        using var right = cat.TrainLoopedLm(With(StageKind.Gate, new GateObjectiveOptions { K = 0.5 })).Fit(data);
        Assert.Equal(4, right.Meta.Step);

        // A kind registered in ObjectiveKinds (the one extension point) trains with its own typed options.
        var registered = With(StageKind.Custom, new GateObjectiveOptions { K = 2 });
        registered.Stages[1].CustomKind = "gate-k";
        GateObjectiveOptions? seen = null;
        registered.ObjectiveKinds.Add(new ObjectiveKind<GateObjectiveOptions>("gate-k", (options, _) => new GateObjective(seen = options)));
        using var registeredScorer = cat.TrainLoopedLm(registered).Fit(data);
        Assert.Equal(["pretrain", "gate"], registeredScorer.Meta.Stages.Select(s => s.Name).TakeLast(2));
        // bitwise: a setting read back as given, not computed
        Assert.Equal(2, seen!.K);
    }

    [Fact]
    public void TheMetaRecordsThePlanStepsTokensMetricsAndTokenizer()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        var dir = MlNetTestData.TempDir("meta");
        try
        {
            var o = Tiny();
            o.ModelDirectory = dir;
            o.TokenizerDescription = new System.Text.Json.Nodes.JsonObject { ["kind"] = "test", ["vocab_size"] = Vocab };
            using var scorer = ml.LoopRpt().TrainLoopedLm(o).Fit(data);
            var saved = LoopRpt.Checkpoints.ModelDirectory.ReadMeta(dir);
            foreach (var m in new[] { scorer.Meta, saved, scorer.TrainingResult!.Meta })
            {
                Assert.Equal([new LoopRpt.Checkpoints.StageRecord("pretrain", 6), new LoopRpt.Checkpoints.StageRecord("gate", 2)], m.Stages);
                Assert.Equal(8, m.Step);
                Assert.Equal(8 * 4 * 16, m.TokensSeen);
                var last = scorer.TrainingResult!.LastProgress!.Metrics;
                Assert.Equal(last.Keys.Order(), m.Metrics.Keys.Order());
                // bitwise: the same report, read through two surfaces
                foreach (var (k, v) in last) Assert.Equal(v, m.Metrics[k]);
                Assert.Equal(o.TokenizerDescription.ToJsonString(), m.Tokenizer!.ToJsonString());
            }
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void TheSpikeOptionsReachTheTrainer()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        TrainingDivergedException Fit(int patience)
        {
            var o = Tiny(gate: 0);
            o.Stages = [new StageDescriptor { Kind = StageKind.Custom, CustomKind = "inflated", Steps = 12, LearningRate = 3e-3 }];
            o.ObjectiveKinds.Add(new ObjectiveKind<PretrainObjectiveOptions>("inflated",        // a logged loss 100 × too large from step 4
                (options, steps) => new DivergenceTests.InflateLossFrom(new PretrainObjective(options), from: 4)));
            o.SpikePatience = patience;
            return Assert.Throws<TrainingDivergedException>(() => ml.LoopRpt().TrainLoopedLm(o).Fit(data));
        }
        Assert.Equal(5, Fit(1).StageStep);             // LogEvery 1: the report of step 5 (step 4's loss) is the first spike
        Assert.Equal(6, Fit(2).StageStep);
    }

    [Fact]
    public void InvalidInputsFail()
    {
        var ml = new MLContext(seed: 1);
        var cat = ml.LoopRpt();
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(10, Vocab, 1));
        var o = Tiny();
        o.TokenColumnName = "Nope";
        Assert.Contains("Could not find input column 'Nope'", Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(o).Fit(data)).Message);
        var text = ml.Data.LoadFromEnumerable(new[] { new Doc { Text = "x" } });
        o.TokenColumnName = "Text";
        Assert.Contains("Schema mismatch for input column 'Text'", Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(o).Fit(text)).Message);

        Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { BatchSize = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { DType = "float16" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { Stages = [StageDescriptor.Pretrain(0)] }));
        Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { Stages = [] }));
        Assert.Throws<DirectoryNotFoundException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { InitialModelDirectory = "/nonexistent/dir" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { SpikeFactor = 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { SpikeWindow = 0 }));
        // Saving replaces the whole folder: one holding other files is refused before any training.
        var folder = MlNetTestData.TempDir("user-files");
        try
        {
            Directory.CreateDirectory(folder);
            File.WriteAllText(Path.Combine(folder, "keep.txt"), "mine");
            var e = Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(new LoopedLmTrainerEstimator.Options { ModelDirectory = folder }));
            Assert.Contains("not a LoopRpt model directory", e.Message);
            Assert.True(File.Exists(Path.Combine(folder, "keep.txt")));
        }
        finally
        {
            MlNetTestData.Delete(folder);
        }

        var noKind = Tiny();
        noKind.Stages = [new StageDescriptor { Kind = StageKind.Custom, Steps = 2 }];
        Assert.Contains("Custom stage without a CustomKind", Assert.Throws<ArgumentException>(() => cat.TrainLoopedLm(noKind)).Message);

        var empty = ml.Data.LoadFromEnumerable(new List<TokenDoc>());
        var inferred = Tiny();
        inferred.VocabularySize = null;
        Assert.Contains("no rows", Assert.Throws<InvalidOperationException>(() => cat.TrainLoopedLm(inferred).Fit(empty)).Message);
        var blank = ml.Data.LoadFromEnumerable(new[] { new TokenDoc(), new TokenDoc() });
        Assert.Contains("no tokens", Assert.Throws<InvalidOperationException>(() => cat.TrainLoopedLm(inferred).Fit(blank)).Message);
        Assert.Contains("fewer than 17 tokens", Assert.Throws<InvalidOperationException>(() => cat.TrainLoopedLm(Tiny()).Fit(blank)).Message);
        var big = ml.Data.LoadFromEnumerable(new[] { new TokenDoc { Tokens = [1, 2, 999] } });
        Assert.Contains("outside the model's vocabulary", Assert.Throws<InvalidOperationException>(() => cat.TrainLoopedLm(Tiny()).Fit(big)).Message);
    }

    [Fact]
    public void CancelThenResumeEqualsStraightRun()
    {
        var ckpt = MlNetTestData.TempDir("ckpt");
        var ckpt2 = MlNetTestData.TempDir("ckpt");
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
            float[] straight;
            using (var s = ml.LoopRpt().TrainLoopedLm(Tiny(ckpt: ckpt2)).Fit(data))
                straight = s.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();

            using var cts = new CancellationTokenSource();
            var cancelling = Tiny(ckpt: ckpt);
            cancelling.CancellationToken = cts.Token;
            cancelling.Progress = new SyncProgress<TrainingProgress>(p => { if (p.GlobalStep == 5) cts.Cancel(); });
            Assert.Throws<OperationCanceledException>(() => ml.LoopRpt().TrainLoopedLm(cancelling).Fit(data));
            Assert.True(Directory.Exists(Path.Combine(ckpt, "step-00000005")));

            var resume = Tiny(ckpt: ckpt);
            resume.Resume = true;
            using var resumed = ml.LoopRpt().TrainLoopedLm(resume).Fit(data);
            // bitwise: resume = straight run: the same steps on the same state
            Assert.Equal(straight, resumed.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray());

            // ReturnPartial: cancellation gives back the partly trained scorer.
            using var cts2 = new CancellationTokenSource();
            var partial = Tiny();
            partial.CancellationToken = cts2.Token;
            partial.OnCancel = CancellationBehavior.ReturnPartial;
            partial.Progress = new SyncProgress<TrainingProgress>(p => { if (p.GlobalStep == 2) cts2.Cancel(); });
            using var part = ml.LoopRpt().TrainLoopedLm(partial).Fit(data);
            Assert.False(part.TrainingResult!.Completed);
            Assert.Equal(2, part.TrainingResult.GlobalStep);
            Assert.Equal([new LoopRpt.Checkpoints.StageRecord("pretrain", 2)], part.Meta.Stages);     // the steps run, as its checkpoint records
        }
        finally
        {
            MlNetTestData.Delete(ckpt, ckpt2);
        }
    }
    [Fact]
    public void LoopRptStageRunsAfterPretrainingAndReportsItsTerms()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(40, Vocab, 1));
        var reports = new List<LoopRpt.Training.TrainingProgress>();
        var o = Tiny(gate: 0);
        o.Stages = [StageDescriptor.Pretrain(3, 3e-3), StageDescriptor.LoopRpt(2, 1e-4, new LoopRptObjectiveOptions { Rollouts = 2 })];
        o.LogEvery = 1;
        o.Progress = new LoopRpt.Tests.Training.SyncProgress<LoopRpt.Training.TrainingProgress>(reports.Add);
        using var scorer = ml.LoopRpt().TrainLoopedLm(o).Fit(data);
        var last = reports[^1];
        Assert.Equal("looprpt", last.Stage);
        Assert.Equal(2, last.Step);
        foreach (var key in new[] { "pg_loss", "model_loss", "kl", "reward_mean", "hard_fraction", "hard_acc" })
            Assert.True(last.Metrics.ContainsKey(key), key);
        Assert.Equal(["pretrain", "looprpt"], scorer.Meta.Stages.Select(st => st.Name));
    }
}

public class TrainerDeviceAndEpochTests
{
    [NoCudaFact]
    public void HonoursMLContextGpuSettings()
    {
        var data = new MLContext(1).Data.LoadFromEnumerable(MlNetTestData.TokenDocs(20, 40, 1));
        var strict = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = false };
        var e = Assert.Throws<InvalidOperationException>(() => strict.LoopRpt().TrainLoopedLm(TrainerWorkoutTests.Tiny(2, 0)).Fit(strict.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(20, 40, 1))));
        Assert.Contains("cuda:0", e.Message);
        var lenient = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = true };
        using var scorer = lenient.LoopRpt().TrainLoopedLm(TrainerWorkoutTests.Tiny(2, 0)).Fit(data);
        Assert.Equal(TorchSharp.DeviceType.CPU, scorer.Model.Device.type);
    }

    [Fact]
    public void EpochsTurnIntoStepsFromTheDataSize()
    {
        var ml = new MLContext(seed: 1);
        // 10 rows × 15 tokens + separator = 160 tokens → windows of 17 advancing by 16: floor((160 - 17) / 16) + 1 = 9.
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 10).Select(i => new TokenDoc { Tokens = Enumerable.Range(1, 15).ToArray() }));
        var o = TrainerWorkoutTests.Tiny();
        o.Stages = [new StageDescriptor { Kind = StageKind.Pretrain, Epochs = 2, LearningRate = 1e-3 }];    // ceil(2 × 9 / 4) = 5 steps
        using var scorer = ml.LoopRpt().TrainLoopedLm(o).Fit(data);
        Assert.Equal(5, scorer.TrainingResult!.GlobalStep);
    }
}

public class TrainerContinuationTests
{
    [Fact]
    public void TextInputAndContinuingFromAModelDirectory()
    {
        var dir = MlNetTestData.TempDir("cont");
        try
        {
            var ml = new MLContext(seed: 1);
            var text = ml.Data.LoadFromEnumerable(MlNetTestData.Docs(40, 3));
            var options = TrainerWorkoutTests.Tiny(4, 0);
            options.VocabularySize = null;                       // from the tokenizer fitted in the same chain
            options.ModelDirectory = dir;
            using var first = ml.LoopRpt().TrainLoopedLmOnText("Text", options, new TokenizingEstimator.Options { VocabularySize = 280 }).Fit(text);
            var scorer = first.LastTransformer;
            Assert.Equal(280, scorer.Config.VocabSize);
            Assert.Equal(Path.GetFullPath(dir), Path.GetFullPath(scorer.ModelDirectory!));

            // Continue the saved model with a gate stage: the history accumulates.
            var tokens = first.Transform(text);
            var gate = TrainerWorkoutTests.Tiny();
            gate.VocabularySize = null;
            gate.InitialModelDirectory = dir;
            gate.Stages = [StageDescriptor.Gate(3, 1e-2)];
            using var second = ml.LoopRpt().TrainLoopedLm(gate).Fit(tokens);
            Assert.Equal(7, second.Meta.Step);
            Assert.Equal(["pretrain", "gate"], second.Meta.Stages.Select(s => s.Name));
            Assert.Equal("TrainedBpe", second.Meta.Tokenizer!["kind"]!.GetValue<string>());
            // Gate training touches only the gate: the LM head is unchanged.
            var head1 = TestUtil.ToArray(scorer.Model.LmHead.weight!);
            var head2 = TestUtil.ToArray(second.Model.LmHead.weight!);
            // bitwise: gate training leaves the LM head's stored values untouched
            Assert.Equal(head1, head2);
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }
}

public class TrainerStorageTests
{
    [Fact]
    public void DirectoryStorageWithoutADirectoryFailsAtSave()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(20, 40, 1));
        var o = TrainerWorkoutTests.Tiny(2, 0);
        o.Scorer = new AdaptiveExitScoringTransformer.Options { Storage = ModelStorage.Directory };
        using var scorer = ml.LoopRpt().TrainLoopedLm(o).Fit(data);
        var zip = MlNetTestData.TempDir("zip") + ".zip";
        try
        {
            var e = Assert.Throws<InvalidOperationException>(() => ml.Model.Save(scorer, data.Schema, zip));
            Assert.Contains("LoopedLmTrainerEstimator.Options.ModelDirectory", e.Message);
        }
        finally
        {
            MlNetTestData.Delete(zip);
        }
    }
}
