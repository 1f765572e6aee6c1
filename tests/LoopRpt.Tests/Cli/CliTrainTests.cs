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
