using System.Text.Json;
using LoopRpt.Checkpoints;
using LoopRpt.Cli;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Cli;

/// <summary>Every verb on one tiny model trained through the CLI (pretrain, gate and a LoopRPT step).</summary>
public sealed class CliVerbTests(TrainedModelFixture fx) : IClassFixture<TrainedModelFixture>
{
    [Fact]
    public void TrainWritesAModelDirectoryWithItsTokenizerAndPlainProgress()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        Assert.True(ModelDirectory.IsModelDirectory(fx.Model));
        var meta = ModelDirectory.ReadMeta(fx.Model);
        Assert.NotNull(meta.Tokenizer);
        Assert.Equal(["pretrain", "gate", "looprpt"], meta.Stages.Select(s => s.Name));
        Assert.Equal(9, meta.Step);
        Assert.Contains("progress stage=pretrain step=2/6", fx.TrainResult.Out);
        Assert.Contains("progress stage=looprpt step=1/1", fx.TrainResult.Out);
        Assert.Contains("summary completed=true global_step=9", fx.TrainResult.Out);
    }

    [Fact]
    public void ScoreWithQOneEqualsTheLastLoopLogLikelihoodComputedDirectly()
    {
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "1", "--per-token", "--threads", "1");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var rows = doc.RootElement.EnumerateArray().ToArray();
        Assert.Equal(40, rows.Length);
        Assert.Contains("score documents=40", r.Err);

        // Independent computation for document 3: BOS + ids, one forward, log p at the last loop.
        var loaded = ModelDirectory.Load(fx.Model);
        using var lm = loaded.Model;
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromJson(loaded.Meta.Tokenizer!.ToJsonString()));
        var ids = tok.Encode(CliRunner.CorpusLines()[3], addBos: true).Select(i => (long)i).ToArray();
        double expected;
        using (no_grad())
        {
            var output = lm.Forward(tensor(ids[..^1], [1, ids.Length - 1]));
            expected = lm.GoldLogProbs(output.Hidden[^1], tensor(ids[1..], [1, ids.Length - 1])).to_type(ScalarType.Float64).sum().item<double>();
        }
        var row = rows[3];
        Assert.Equal(ids.Length - 1, row.GetProperty("tokens").GetInt32());
        Assert.Equal(expected, row.GetProperty("log_likelihood").GetDouble(), 4);
        Assert.Equal(Math.Exp(-expected / (ids.Length - 1)), row.GetProperty("perplexity").GetDouble(), 4);
        Assert.All(row.GetProperty("exit_steps").EnumerateArray(), e => Assert.Equal(lm.Config.TotalUtSteps, e.GetInt32()));
    }

    [Fact]
    public void AdaptiveScoreMatchesTheFullDepthReadOutAtEachTokensQExitStep()
    {
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "0.5", "--per-token");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var row = doc.RootElement[5];

        // Reference: every loop for every token, then read each token out at its Q-exit step (docs/method.md §2).
        var loaded = ModelDirectory.Load(fx.Model);
        using var lm = loaded.Model;
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromJson(loaded.Meta.Tokenizer!.ToJsonString()));
        var ids = tok.Encode(CliRunner.CorpusLines()[5], addBos: true).Select(i => (long)i).ToArray();
        double expected;
        long[] steps;
        using (no_grad())
        {
            var output = lm.Forward(tensor(ids[..^1], [1, ids.Length - 1]));
            var q = LoopRpt.Model.ExitDistribution.QExitStep(output.ExitProbabilities(), 0.5);
            steps = q.data<long>().ToArray();
            expected = lm.GoldLogProbsPerStep(output, tensor(ids[1..], [1, ids.Length - 1])).gather(-1, q.unsqueeze(-1)).to_type(ScalarType.Float64).sum().item<double>();
        }
        Assert.Equal(steps.Select(x => (int)x + 1), row.GetProperty("exit_steps").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(expected, row.GetProperty("log_likelihood").GetDouble(), 1e-4 * steps.Length + 1e-3);   // float32 rounding of different attention paths
    }

    [Fact]
    public void ScoreWritesCsvToAFile()
    {
        var csv = Path.Combine(CliRunner.TempDir(), "scores.csv");
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--format", "Csv", "--q", "0.5", "--out", csv);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var lines = File.ReadAllLines(csv);
        Assert.Equal("index,tokens,log_likelihood,perplexity,mean_exit_step", lines[0]);
        Assert.Equal(41, lines.Length);
        var exit = double.Parse(lines[1].Split(',')[4], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(exit, 1, 4);
        Assert.Contains("score documents=40", r.Out);
    }

    [Fact]
    public void EvaluateWritesThePaperTables()
    {
        var dir = CliRunner.TempDir();
        var md = Path.Combine(dir, "eval.md");
        var csv = Path.Combine(dir, "eval.csv");
        var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "0.5,1", "--out", md, "--csv", csv);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        foreach (var s in new[] { "| s1 | s2 | s3 | s4 |", "Easy", "Medium", "Hard", "peak step", "q=0.5 acc @ exit" })
            Assert.Contains(s, r.Out);
        Assert.Equal(r.Out, File.ReadAllText(md));
        Assert.StartsWith("model,bucket,tokens,kind,x,accuracy,mean_exit_step", File.ReadAllText(csv));
    }

    [Fact]
    public void ParetoWritesTableCsvAndPlot()
    {
        var dir = Path.Combine(CliRunner.TempDir(), "pareto");
        var r = CliRunner.Run("pareto", "--model", fx.Model, "--model", fx.Model, "--labels", "a,b", "--input", fx.Corpus, "--seq-len", "16", "--q", "0.2,0.6,1", "--out-dir", dir);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.StartsWith("<svg", File.ReadAllText(Path.Combine(dir, "pareto.svg")));
        Assert.Contains("| All | a |", File.ReadAllText(Path.Combine(dir, "pareto.md")));
        Assert.Equal(1 + 2 * 4 * (4 + 3), File.ReadAllLines(Path.Combine(dir, "pareto.csv")).Length);   // header + models × buckets × (steps + qs)
    }

    [Fact]
    public void ParetoWithMismatchedLabelsIsAUsageError()
    {
        var r = CliRunner.Run("pareto", "--model", fx.Model, "--labels", "a,b", "--input", fx.Corpus, "--out-dir", CliRunner.TempDir());
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--labels", r.Err);
    }

    [Fact]
    public void GenerateReportsLoopsPerToken()
    {
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "the cat", "-n", "6", "--no-stop", "--q", "1", "--format", "Json");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var tokens = doc.RootElement.GetProperty("tokens").EnumerateArray().ToArray();
        Assert.Equal(6, tokens.Length);
        Assert.All(tokens, t => Assert.Equal(4, t.GetProperty("loops").GetInt32()));        // q = 1: every loop
        Assert.Equal(4.0, doc.RootElement.GetProperty("mean_loops").GetDouble());
        Assert.Equal(string.Concat(tokens.Select(t => t.GetProperty("text").GetString())), doc.RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public void GenerateTextListsEveryToken()
    {
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "-n", "5", "--no-stop", "--q", "0.3");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var rows = r.Out.Split('\n').SkipWhile(l => l != "token\tloops\ttext").Skip(1).TakeWhile(l => l.Length > 0 && char.IsDigit(l[0])).ToArray();
        Assert.Equal(5, rows.Length);
        Assert.All(rows, l => Assert.InRange(int.Parse(l.Split('\t')[1]), 1, 4));
        Assert.Contains("generate tokens=5", r.Out);

        var shared = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "-n", "5", "--no-stop", "--q", "0.3", "--kv-cache", "LastLoop", "--format", "Json");
        Assert.True(shared.Code == ExitCodes.Success, shared.ToString());
        using var doc = JsonDocument.Parse(shared.Out);
        Assert.Equal(5, doc.RootElement.GetProperty("tokens").GetArrayLength());
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "--kv-cache", "Everywhere").Code);
    }

    [Fact]
    public void MissingModelIsAnInputErrorAndACorruptOneAModelError()
    {
        var r = CliRunner.Run("score", "--model", "/nonexistent/model", "--input", fx.Corpus);
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("does not exist", r.Err);

        var bad = CliRunner.TempDir();
        foreach (var f in Directory.GetFiles(fx.Model)) File.Copy(f, Path.Combine(bad, Path.GetFileName(f)));
        File.WriteAllBytes(Path.Combine(bad, "model.safetensors"), [1, 2, 3]);
        r = CliRunner.Run("generate", "--model", bad, "--prompt", "x");
        Assert.Equal(ExitCodes.ModelError, r.Code);
        Assert.Contains("model.safetensors", r.Err);
    }

    [Fact]
    public void BadOptionValuesAreUsageErrors()
    {
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "1.5").Code);
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--q", "0.5,x").Code);
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x", "--top-p", "0");
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--top-p", r.Err);
    }
}
