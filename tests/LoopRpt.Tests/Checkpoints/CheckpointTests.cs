using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Tests.Training;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Checkpoints;

public sealed class CheckpointTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "looprpt-ckpt-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private static Tensor LastLogits(OuroForCausalLM lm, Tensor ids) => lm.Logits(lm.Forward(ids).Hidden[^1]);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SaveThenLoadGivesIdenticalLogits(bool tie)
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel(tie: tie);
        var path = Path.Combine(_dir, "m");
        ModelDirectory.Save(path, lm, new ModelMeta { Step = 12 });
        var loaded = ModelDirectory.Load(path);
        using var m2 = loaded.Model;
        var ids = TestUtil.RandomIds(2, 6, 64, 4);
        Assert.True(TestUtil.BitEqual(LastLogits(lm, ids), LastLogits(m2, ids)));
        Assert.Equal(12, loaded.Meta.Step);
        Assert.Equal(tie, m2.Config.TieWordEmbeddings);
        using var file = SafeTensors.Open(Path.Combine(path, ModelWeights.FileName));
        Assert.Equal(!tie, file.Tensors.ContainsKey("lm_head.weight"));
    }

    [Fact]
    public void BFloat16SaveKeepsTheDtype()
    {
        using var scope = NewDisposeScope();
        using var lm = new OuroForCausalLM(TestUtil.TinyModel().Config, dtype: ScalarType.BFloat16);
        var path = Path.Combine(_dir, "bf");
        ModelDirectory.Save(path, lm, new ModelMeta());
        using var file = SafeTensors.Open(Path.Combine(path, ModelWeights.FileName));
        Assert.All(file.Tensors.Values, t => Assert.Equal("BF16", t.DType));
        var loaded = ModelDirectory.Load(path);
        using var m2 = loaded.Model;
        Assert.Equal(ScalarType.BFloat16, m2.DType);
        Assert.Equal("bfloat16", loaded.Meta.DType);
    }

    [Fact]
    public void SafeTensorsHeaderIsTheReferenceLayout()
    {
        using var scope = NewDisposeScope();
        var path = Path.Combine(_dir, "x.safetensors");
        Directory.CreateDirectory(_dir);
        SafeTensors.Save(path, [("a", tensor(new float[] { 1, 2, 3 })), ("b", tensor(new long[] { 7 }).view(1, 1))]);
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, n % 8);
        var header = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, (int)n)).RootElement;
        Assert.Equal("F32", header.GetProperty("a").GetProperty("dtype").GetString());
        Assert.Equal("[0,12]", header.GetProperty("a").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[12,20]", header.GetProperty("b").GetProperty("data_offsets").GetRawText());
        // bitwise: the stored bytes of the literal 2f, read back
        Assert.Equal(2f, BitConverter.ToSingle(bytes, 8 + (int)n + 4));
        Assert.Equal(7L, BitConverter.ToInt64(bytes, 8 + (int)n + 12));
    }

    private string SavedModel()
    {
        using var lm = TestUtil.TinyModel();
        var path = Path.Combine(_dir, "m");
        ModelDirectory.Save(path, lm, new ModelMeta());
        return path;
    }

    [Fact]
    public void TruncatedWeightsFailNamingTheFile()
    {
        var path = SavedModel();
        var weights = Path.Combine(path, ModelWeights.FileName);
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path));
        Assert.Contains(weights, e.Message);
        Assert.Contains("truncated", e.Message);
        File.WriteAllBytes(weights, [1, 2, 3]);
        Assert.Contains("fewer than the 8-byte header", Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path)).Message);
    }

    [Fact]
    public void MismatchedConfigFailsNamingTheTensor()
    {
        var path = SavedModel();
        var config = OuroConfig.FromJson(File.ReadAllText(Path.Combine(path, "config.json")));
        config.IntermediateSize = 48;
        File.WriteAllText(Path.Combine(path, "config.json"), config.ToJson());
        var e = Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path));
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", e.Message);
        Assert.Contains("[64, 32]", e.Message);

        config.IntermediateSize = 64;
        config.NumHiddenLayers = 1;
        File.WriteAllText(Path.Combine(path, "config.json"), config.ToJson());
        e = Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path));
        Assert.Contains("model.layers.1.", e.Message);
    }

    [Fact]
    public void MissingTensorAndBadFilesFailClearly()
    {
        var path = SavedModel();
        var weights = Path.Combine(path, ModelWeights.FileName);
        using (var scope = NewDisposeScope())
        {
            List<(string, Tensor)> kept;
            using (var f = SafeTensors.Open(weights))
                kept = f.Tensors.Keys.Where(k => k != "model.norm.weight").Select(k => (k, f.Read(k))).ToList();
            SafeTensors.Save(weights, kept);
        }
        Assert.Contains("'model.norm.weight'", Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path)).Message);

        File.WriteAllText(Path.Combine(path, "meta.json"), "{\"format\":\"looprpt-model\",\"format_version\":99}");
        Assert.Contains("format_version 99", Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path)).Message);
        File.WriteAllText(Path.Combine(path, "config.json"), "{not json");
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => ModelDirectory.Load(path)).Message);
        Assert.Throws<DirectoryNotFoundException>(() => ModelDirectory.Load(Path.Combine(_dir, "nope")));
    }

    [Fact]
    public void SavingOverAFolderOfOtherFilesIsRefused()
    {
        using var lm = TestUtil.TinyModel();
        var folder = Path.Combine(_dir, "user");
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        File.WriteAllText(Path.Combine(folder, "thesis.tex"), "\\documentclass{article}\n");
        var e = Assert.Throws<IOException>(() => ModelDirectory.Save(folder, lm, new ModelMeta()));
        Assert.Contains("not a LoopRpt model directory", e.Message);
        Assert.Contains("thesis.tex", e.Message);
        Assert.True(File.Exists(Path.Combine(folder, "thesis.tex")));
        Assert.Equal([folder], Directory.GetDirectories(_dir));                          // no temporary left behind

        // New, empty and model folders are fine; a model directory is replaced as a whole.
        Assert.Null(ModelDirectory.ReplaceProblem(Path.Combine(_dir, "new")));
        Directory.CreateDirectory(Path.Combine(_dir, "empty"));
        ModelDirectory.Save(Path.Combine(_dir, "empty"), lm, new ModelMeta());
        ModelDirectory.Save(Path.Combine(_dir, "empty") + Path.DirectorySeparatorChar, lm, new ModelMeta { Step = 3 });
        Assert.Equal(3, ModelDirectory.ReadMeta(Path.Combine(_dir, "empty")).Step);
    }

    [Fact]
    public void AFailedSaveLeavesThePreviousModelIntact()
    {
        using var scope = NewDisposeScope();
        var path = SavedModel();
        var before = File.ReadAllBytes(Path.Combine(path, ModelWeights.FileName));
        using var other = TestUtil.TinyModel(seed: 99);
        Assert.Throws<IOException>(() => ModelDirectory.Save(path, other, new ModelMeta(), _ => throw new IOException("disk full")));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(path, ModelWeights.FileName)));
        Assert.Single(Directory.GetDirectories(_dir));             // no temporary left behind

        // A swap interrupted after the old copy was moved aside is recovered on load.
        Directory.Move(path, path + ".old-deadbeef");
        using var recovered = ModelDirectory.Load(path).Model;
        Assert.True(Directory.Exists(path));
    }

    [Fact]
    public void DivergingRunStopsAndKeepsTheLastGoodCheckpoint()
    {
        using var lm = TestUtil.TinyModel(vocab: 32);
        var source = new PackedTokenSource(TrainerTests.PatternTokens(2000, 32, 1), 2, 16, 1);
        var ckpt = Path.Combine(_dir, "ckpt");
        var trainer = new LoopedLmTrainer(new TrainerOptions { CheckpointDirectory = ckpt, CheckpointEvery = 2, MaxConsecutiveBadSteps = 3 });
        var poisoned = new PoisonAfter(new PretrainObjective(), 4);
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Train(lm, source, [new TrainingStage(poisoned, 20)]));
        Assert.IsAssignableFrom<InvalidOperationException>(e);
        Assert.Equal(DivergenceKind.NonFinite, e.Kind);
        Assert.Contains("3 consecutive steps", e.Message);
        // Steps 4, 5, 6 are non-finite. The checkpoint of step 4 holds the weights whose loss (step 4's) was the first
        // non-finite one, so it is removed; step 2's was followed by finite steps and a sane loss: it is the one kept.
        var latest = new CheckpointManager(ckpt).Latest();
        Assert.EndsWith(CheckpointManager.StepDirectoryName(2), latest);
        Assert.Equal(latest, e.LastGoodCheckpoint);
        Assert.Equal(1, e.RemovedCheckpoints);
        Assert.False(Directory.Exists(Path.Combine(ckpt, CheckpointManager.StepDirectoryName(4))));
        Assert.Contains(latest!, e.Message);
        using var good = ModelDirectory.Load(latest!).Model;
        Assert.All(good.UniqueParameters(), p => Assert.True(p.Param.isfinite().all().item<bool>(), p.Name));
    }

    [Fact]
    public void ASingleNonFiniteStepIsSkippedAndReported()
    {
        using var lm = TestUtil.TinyModel(vocab: 32);
        var source = new PackedTokenSource(TrainerTests.PatternTokens(2000, 32, 1), 2, 16, 1);
        var reports = new List<TrainingProgress>();
        var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 5, Progress = new SyncProgress<TrainingProgress>(reports.Add) });
        var result = trainer.Train(lm, source, [new TrainingStage(new PoisonAfter(new PretrainObjective(), 2, only: true), 5)]);
        Assert.True(result.Completed);
        Assert.Equal(1, reports[^1].SkippedSteps);
        Assert.True(double.IsFinite(reports[^1].Loss));
        Assert.All(lm.UniqueParameters(), p => Assert.True(p.Param.isfinite().all().item<bool>(), p.Name));
    }

    /// <summary>Multiplies the loss by NaN from a given step on (or at that step only).</summary>
    private sealed class PoisonAfter(ITrainingObjective inner, long from, bool only = false) : ITrainingObjective
    {
        public string Name => inner.Name;
        public IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> TrainableParameters(OuroForCausalLM lm) => inner.TrainableParameters(lm);
        public void Attach(OuroForCausalLM lm) => inner.Attach(lm);
        public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
        {
            var o = inner.Compute(lm, inputs, targets, step, stageStep, microStep);
            bool poison = only ? step == from : step >= from;
            return poison ? new ObjectiveOutput(o.Loss * double.NaN, o.Metrics.ToDictionary(kv => kv.Key, kv => kv.Value * double.NaN)) : o;
        }
        public void AfterOptimizerStep(OuroForCausalLM lm, long step) => inner.AfterOptimizerStep(lm, step);
        public IEnumerable<(string Name, Tensor Tensor)> StateTensors() => inner.StateTensors();
        public void LoadState(Func<string, Tensor, bool> copyInto) => inner.LoadState(copyInto);
        public void Dispose() => inner.Dispose();
    }
}
