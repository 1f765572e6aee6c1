using LoopRpt.Checkpoints;
using LoopRpt.Cli;

namespace LoopRpt.Tests.Cli;

public sealed class CliTrainTests
{
    private static (string Dir, string Corpus) Setup()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "c.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(20));
        return (dir, corpus);
    }

    [Fact]
    public void BadStagePlansAreUsageErrors()
    {
        var (dir, corpus) = Setup();
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "pretrain:4,finetune:2"));
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("unknown stage 'finetune'", r.Err);
        r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "pretrain:0"));
        Assert.Equal(ExitCodes.Usage, r.Code);
        r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "pretrain:4:-1"));
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("learning rate", r.Err);
        // Issue 19 §5: the message names the actual problem.
        r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "looprpt:60:1e-4:x"));
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("':x' is extra in 'looprpt:60:1e-4:x'", r.Err);
        Assert.DoesNotContain("positive integer", r.Err);
        r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "gate:ten"));
        Assert.Contains("STEPS 'ten' in 'gate:ten' must be a positive integer", r.Err);
        r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "gate"));
        Assert.Contains("'gate' gives no step count", r.Err);
    }

    /// <summary>Issue 19 §5: `tokenizer` and `train` (and `experiment`) learn the same vocabulary size by default.</summary>
    [Fact]
    public void TokenizerAndTrainShareTheDefaultVocabulary()
    {
        foreach (var verb in new[] { "tokenizer", "train", "experiment" })
        {
            var option = (System.CommandLine.Option<int>)CliApp.CreateRootCommand().Subcommands.Single(c => c.Name == verb).Options.Single(o => o.Name == "--vocab-size");
            Assert.Equal(512, option.DefaultValueFactory!(null!));
        }
    }

    [Fact]
    public void TooFewTokensIsAnInputError()
    {
        var (dir, _) = Setup();
        var corpus = Path.Combine(dir, "short.txt");
        File.WriteAllText(corpus, "hi\n");
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m")));
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("--seq-len", r.Err);
    }

    /// <summary>The saved meta.json records the plan, the steps, the tokens, the last report's metrics and the tokenizer, with or without checkpoints.</summary>
    [Fact]
    public void TheSavedMetaRecordsTheRunWithOrWithoutCheckpoints()
    {
        var (dir, corpus) = Setup();
        var plain = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "plain"), "pretrain:3,gate:2"));
        Assert.True(plain.Code == ExitCodes.Success, plain.ToString());
        var checkpointed = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "ck-model"), "pretrain:3,gate:2", "--checkpoint-dir", Path.Combine(dir, "ck")));
        Assert.True(checkpointed.Code == ExitCodes.Success, checkpointed.ToString());
        var a = ModelDirectory.ReadMeta(Path.Combine(dir, "plain"));
        var b = ModelDirectory.ReadMeta(Path.Combine(dir, "ck-model"));
        foreach (var m in new[] { a, b })
        {
            Assert.Equal([new StageRecord("pretrain", 3), new StageRecord("gate", 2)], m.Stages);
            Assert.Equal(5, m.Step);
            Assert.Equal(5 * 2 * 16, m.TokensSeen);
            Assert.Contains("loss", m.Metrics.Keys);
            Assert.Equal("TrainedBpe", m.Tokenizer!["kind"]!.GetValue<string>());
        }
        Assert.Equal(a.Metrics.Keys.Order(), b.Metrics.Keys.Order());
        foreach (var (k, v) in a.Metrics) Assert.Equal(v, b.Metrics[k]);      // bitwise: same seed, same run: the same last report
        Assert.Equal(a.Tokenizer!.ToJsonString(), b.Tokenizer!.ToJsonString());
    }

    [Fact]
    public void ResumeContinuesTheCheckpointAndAChangedPlanIsRefused()
    {
        var (dir, corpus) = Setup();
        var ck = Path.Combine(dir, "ck");
        var first = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m1"), "pretrain:3,gate:2", "--checkpoint-dir", ck));
        Assert.True(first.Code == ExitCodes.Success, first.ToString());
        Assert.NotNull(new CheckpointManager(ck).Latest());

        // Resuming a finished plan restores the weights and trains nothing more.
        var again = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m2"), "pretrain:3,gate:2", "--checkpoint-dir", ck, "--resume"));
        Assert.True(again.Code == ExitCodes.Success, again.ToString());
        Assert.Contains("resume=" + ck, again.Out);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "m1", "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "m2", "model.safetensors")));

        var changed = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m3"), "pretrain:5", "--checkpoint-dir", ck, "--resume"));
        Assert.Equal(ExitCodes.ModelError, changed.Code);
        Assert.Contains("plan", changed.Err);
    }

    [Fact]
    public void ResumeWithoutACheckpointFolderIsAUsageError()
    {
        var (dir, corpus) = Setup();
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "pretrain:2", "--resume"));
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--checkpoint-dir", r.Err);
    }

    [Fact]
    public void InitContinuesAModelDirectoryWithItsTokenizer()
    {
        var (dir, corpus) = Setup();
        var m1 = Path.Combine(dir, "m1");
        Assert.Equal(ExitCodes.Success, CliRunner.Run(CliRunner.TinyTrain(corpus, m1, "pretrain:2")).Code);
        var m2 = Path.Combine(dir, "m2");
        var r = CliRunner.Run(["train", "--input", corpus, "--init", m1, "--out", m2, "--stages", "gate:2", "--batch-size", "2", "--seq-len", "16", "--progress", "None"]);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var meta = ModelDirectory.ReadMeta(m2);
        Assert.Equal(["pretrain", "gate"], meta.Stages.Select(s => s.Name));
        Assert.Equal(ModelDirectory.ReadMeta(m1).Tokenizer!.ToJsonString(), meta.Tokenizer!.ToJsonString());
        Assert.DoesNotContain("progress ", r.Out);
    }
}

public sealed class CliCancellationTests
{
    /// <summary>Cancels when the first progress line is written, i.e. in the middle of training.</summary>
    private sealed class CancelOnProgress(CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.StartsWith("progress ", StringComparison.Ordinal) == true) cts.Cancel();
        }
    }

    [Fact]
    public void CancelledTrainingCheckpointsExitsWith130AndResumes()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "c.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(20));
        var ck = Path.Combine(dir, "ck");
        using var cts = new CancellationTokenSource();
        var o = new CancelOnProgress(cts);
        var e = new StringWriter();
        var args = CliRunner.TinyTrain(corpus, Path.Combine(dir, "m"), "pretrain:40", "--checkpoint-dir", ck);
        int code = LoopRpt.Cli.CliApp.Run(args, o, e, cts.Token);
        Assert.True(code == LoopRpt.Cli.ExitCodes.Cancelled, $"{code}\n{o}\n{e}");
        Assert.Contains("--resume", e.ToString());
        Assert.False(Directory.Exists(Path.Combine(dir, "m")));
        var latest = new LoopRpt.Checkpoints.CheckpointManager(ck).Latest();
        Assert.NotNull(latest);
        long step = LoopRpt.Checkpoints.ModelDirectory.ReadMeta(latest).Step;
        Assert.InRange(step, 2, 39);

        var resumed = CliRunner.Run([.. args, "--resume"]);
        Assert.True(resumed.Code == LoopRpt.Cli.ExitCodes.Success, resumed.ToString());
        Assert.Contains("resume=" + latest, resumed.Out);
        Assert.Contains("summary completed=true global_step=40", resumed.Out);
    }
}

public sealed class CliHuggingFaceTests
{
    [Fact]
    public void TrainContinuesAHuggingFaceOuroDirectoryAndKeepsItsTokenizer()
    {
        var dir = CliRunner.TempDir();
        var hf = Path.Combine(dir, "hf");
        var config = LoopRpt.Tests.Interop.ReferenceLayout.TinyConfig();
        using (var lm = LoopRpt.Tests.Interop.ReferenceLayout.RandomModel(config, 3))
            LoopRpt.Tests.Interop.ReferenceLayout.WriteCheckpoint(hf, LoopRpt.Tests.Interop.ReferenceLayout.StoredTensors(lm, "F32"), LoopRpt.Tests.Interop.ReferenceLayout.ConfigJson());
        var corpus = Path.Combine(dir, "c.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(20));
        var output = Path.Combine(dir, "out");
        var r = CliRunner.Run("train", "--input", corpus, "--init", hf, "--out", output, "--stages", "pretrain:2", "--batch-size", "2", "--seq-len", "8", "--progress", "None");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Equal(File.ReadAllBytes(Path.Combine(hf, "tokenizer.json")), File.ReadAllBytes(Path.Combine(output, "tokenizer.json")));
        Assert.Equal(["pretrain"], ModelDirectory.ReadMeta(output).Stages.Select(s => s.Name));
        var g = CliRunner.Run("generate", "--model", output, "--prompt", "hello", "-n", "3", "--no-stop");
        Assert.True(g.Code == ExitCodes.Success, g.ToString());
        Assert.Contains("generate tokens=3", g.Out);
    }
}
