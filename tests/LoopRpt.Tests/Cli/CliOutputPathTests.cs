using System.Text.Json.Nodes;
using LoopRpt.Cli;

namespace LoopRpt.Tests.Cli;

/// <summary>
/// Output paths and options that cannot work are refused before any expensive step (tokenizer training, model building,
/// scoring) with a usage error naming the option and the path, and without a stack trace.
/// </summary>
public sealed class CliOutputPathTests
{
    private static (string Dir, string Corpus, string File) Setup(int lines = 40)
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(lines));
        var file = Path.Combine(dir, "a-file");
        File.WriteAllText(file, "not a folder\n");
        return (dir, corpus, file);
    }

    private static void AssertUsageError(CliRunner.Result r, params string[] named)
    {
        Assert.True(r.Code == ExitCodes.Usage, r.ToString());
        foreach (var n in named) Assert.Contains(n, r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("(Parameter", r.Err);
    }

    [Fact]
    public void TrainOutThatIsAFileFailsBeforeTraining()
    {
        var (_, corpus, file) = Setup();
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, file));
        AssertUsageError(r, "--out", file, "is an existing file");
        Assert.Equal("", r.Out);                                     // no "train documents=..." line, no progress: nothing ran
        Assert.Equal("not a folder\n", File.ReadAllText(file));
    }

    [Fact]
    public void TrainOutThatIsAFolderOfOtherFilesIsRefusedBeforeTraining()
    {
        var (dir, corpus, _) = Setup();
        var folder = Path.Combine(dir, "mine");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "notes.txt"), "keep me\n");
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, folder, "pretrain:2"));
        AssertUsageError(r, "--out", folder, "not a LoopRpt model directory", "notes.txt");
        Assert.Equal("", r.Out);                                     // nothing ran
        Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(folder).Select(Path.GetFileName));
        Assert.Equal("keep me\n", File.ReadAllText(Path.Combine(folder, "notes.txt")));

        // A checkpoint folder is refused too; an empty folder, and then the model directory written there, are replaced.
        var ck = Path.Combine(dir, "ck");
        Directory.CreateDirectory(Path.Combine(ck, "step-00000002"));
        File.WriteAllText(Path.Combine(ck, "latest"), "step-00000002\n");
        AssertUsageError(CliRunner.Run(CliRunner.TinyTrain(corpus, ck, "pretrain:2")), "--out", "checkpoint folder");
        var empty = Path.Combine(dir, "empty");
        Directory.CreateDirectory(empty);
        for (int i = 0; i < 2; i++)
        {
            r = CliRunner.Run(CliRunner.TinyTrain(corpus, empty, "pretrain:2"));
            Assert.True(r.Code == ExitCodes.Success, r.ToString());
            Assert.True(LoopRpt.Checkpoints.ModelDirectory.IsModelDirectory(empty));
        }
    }

    [Fact]
    public void TrainOutBelowAFileFailsBeforeTraining()
    {
        var (_, corpus, file) = Setup();
        var model = Path.Combine(file, "model");
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, model));
        AssertUsageError(r, "--out", model, $"'{file}' is a file");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void TrainCheckpointDirThatIsAFileFailsBeforeTraining()
    {
        var (dir, corpus, file) = Setup();
        var model = Path.Combine(dir, "model");
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, model, "pretrain:4,gate:2", "--checkpoint-dir", file, "--checkpoint-every", "2"));
        AssertUsageError(r, "--checkpoint-dir", file);
        Assert.Equal("", r.Out);
        Assert.False(Directory.Exists(model));
    }

    [Fact]
    public void TrainSeqLenBeyondTheContextFailsBeforeTheTokenizerIsTrained()
    {
        var (dir, corpus, _) = Setup(lines: 200);
        var args = CliRunner.TinyTrain(corpus, Path.Combine(dir, "model"), "pretrain:2");
        args[Array.IndexOf(args, "--seq-len") + 1] = "2048";         // the tiny preset's context is 1024
        var r = CliRunner.Run(args);
        AssertUsageError(r, "--seq-len 2048", "max_position_embeddings = 1024");
        Assert.Equal("", r.Out);
        Assert.False(Directory.Exists(Path.Combine(dir, "model")));
    }

    [Fact]
    public void TokenizerOutThatIsAFolderIsAUsageError()
    {
        var (dir, corpus, _) = Setup();
        var r = CliRunner.Run("tokenizer", "--input", corpus, "--vocab-size", "300", "--out", dir);
        AssertUsageError(r, "--out", dir, "is an existing folder");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void ExperimentOutBelowAFileIsAUsageError()
    {
        var (_, corpus, file) = Setup();
        var outDir = Path.Combine(file, "exp");
        var r = CliRunner.Run("experiment", "--input", corpus, "--heldout", corpus, "--out", outDir, "--pretrain-steps", "2", "--gate-steps", "1",
            "--steps", "1", "--seeds", "1", "--progress", "None");
        AssertUsageError(r, "--out", outDir, $"'{file}' is a file");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void TrainingRemovesLeftoversOfAnInterruptedCheckpointSave()
    {
        var (dir, corpus, _) = Setup();
        var ck = Path.Combine(dir, "ck");
        Directory.CreateDirectory(Path.Combine(ck, "step-00000099.tmp-deadbeef"));
        File.WriteAllText(Path.Combine(ck, "step-00000099.tmp-deadbeef", "config.json"), "{}");
        Directory.CreateDirectory(Path.Combine(ck, "latest.tmp-cafe0001"));
        File.WriteAllText(Path.Combine(ck, "latest.tmp-cafe0002"), "step-00000099\n");
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "model"), "pretrain:2", "--checkpoint-dir", ck, "--checkpoint-every", "2"));
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Empty(Directory.GetFileSystemEntries(ck, "*.tmp-*"));
        Assert.True(File.Exists(Path.Combine(ck, "latest")));
    }
}

/// <summary>Bad output paths and options of the verbs that read a model, and a config.json that lacks a required key.</summary>
public sealed class CliModelOutputPathTests(TrainedModelFixture fx) : IClassFixture<TrainedModelFixture>
{
    private string FileIn(string name)
    {
        var dir = CliRunner.TempDir();
        var file = Path.Combine(dir, name);
        File.WriteAllText(file, "x\n");
        return file;
    }

    private static void AssertError(CliRunner.Result r, int code, params string[] named)
    {
        Assert.True(r.Code == code, r.ToString());
        foreach (var n in named) Assert.Contains(n, r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("(Parameter", r.Err);
    }

    [Fact]
    public void ScoreOutBelowAFileFailsBeforeScoring()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var file = FileIn("a-file");
        var outPath = Path.Combine(file, "scores.csv");
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--format", "Csv", "--out", outPath, "--threads", "1");
        AssertError(r, ExitCodes.Usage, "--out", outPath, $"'{file}' is a file");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void EvaluateCsvBelowAFileAndParetoOutDirThatIsAFileAreUsageErrors()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var file = FileIn("a-file");
        var csv = Path.Combine(file, "r.csv");
        var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--csv", csv, "--threads", "1");
        AssertError(r, ExitCodes.Usage, "--csv", csv);
        Assert.Equal("", r.Out);
        r = CliRunner.Run("pareto", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--out-dir", file, "--threads", "1");
        AssertError(r, ExitCodes.Usage, "--out-dir", file, "is an existing file");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void EvaluateSeqLenBeyondTheContextIsAUsageError()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "4096", "--threads", "1");
        AssertError(r, ExitCodes.Usage, "--seq-len 4096", "max_position_embeddings");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void ConfigWithoutHiddenSizeIsAModelErrorNamingTheKey()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var copy = Path.Combine(CliRunner.TempDir(), "model");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(fx.Model)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        var configPath = Path.Combine(copy, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        Assert.True(config.Remove("hidden_size"));
        File.WriteAllText(configPath, config.ToJsonString());

        var r = CliRunner.Run("score", "--model", copy, "--input", fx.Corpus, "--threads", "1");
        AssertError(r, ExitCodes.ModelError, "required key 'hidden_size'", configPath);
        r = CliRunner.Run(CliRunner.TinyTrain(fx.Corpus, Path.Combine(copy, "..", "continued"), "pretrain:1") is var a
            ? a.Where(x => x is not "--hidden-size" and not "32" and not "--vocab-size" and not "280").Concat(["--init", copy]).ToArray() : []);
        AssertError(r, ExitCodes.ModelError, "required key 'hidden_size'");
    }
}
