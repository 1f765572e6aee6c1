using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LoopRpt.Checkpoints;
using LoopRpt.Cli;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Cli;

/// <summary>
/// Numerics that fail loudly (issue 15 §3) through the tool: a diverging `train` stops with exit code 6 and keeps the last
/// sane checkpoint, and `score`/`evaluate`/`generate` refuse a model whose weights or outputs are not finite (exit 6).
/// </summary>
public sealed partial class CliNumericsTests(TrainedModelFixture fx) : IClassFixture<TrainedModelFixture>
{
    private static void AssertError(CliRunner.Result r, int code, params string[] named)
    {
        Assert.True(r.Code == code, r.ToString());
        foreach (var n in named) Assert.Contains(n, r.Err);
        Assert.DoesNotContain("   at ", r.Err);
    }

    [GeneratedRegex(@"^progress .*global_step=(\d+) loss=(\S+)", RegexOptions.Multiline)]
    private static partial Regex ProgressLine();

    [GeneratedRegex(@"nll=(\S+)")]
    private static partial Regex Nll();

    private static Dictionary<long, double> LoggedLosses(string output)
        => ProgressLine().Matches(output).ToDictionary(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
                                                       m => double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));

    /// <summary>
    /// Twelve sane steps, then twelve more at a learning rate that wrecks the model: learning rate 10 gives losses in the
    /// hundreds (the spike rule), 1e6 non-finite gradients (the non-finite guard). Either way: exit 6, no model written,
    /// and the checkpoint kept is the end of the sane stage, whose loss `score` (an independent evaluation) finds sane.
    /// </summary>
    [Theory]
    [InlineData("10")]
    [InlineData("1e6")]
    public void ADivergingTrainStopsWithExit6AndKeepsTheLastSaneCheckpoint(string lr)
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines());
        var (model, ck) = (Path.Combine(dir, "model"), Path.Combine(dir, "ck"));
        var r = CliRunner.Run(CliRunner.TinyTrain(corpus, model, $"pretrain:12,pretrain:12:{lr}", "--checkpoint-dir", ck, "--checkpoint-every", "4"));
        AssertError(r, ExitCodes.NumericalError, "Training diverged", CheckpointManager.StepDirectoryName(12), "is intact");
        Assert.False(Directory.Exists(model));
        Assert.EndsWith(CheckpointManager.StepDirectoryName(12), new CheckpointManager(ck).Latest());

        var logged = LoggedLosses(r.Out);
        var s = CliRunner.Run("score", "--model", ck, "--input", corpus, "--q", "1", "--threads", "1", "--format", "Csv", "--out", Path.Combine(dir, "s.csv"));
        Assert.True(s.Code == ExitCodes.Success, s.ToString());
        double nll = double.Parse(Nll().Match(s.Out).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(Math.Abs(nll - logged[12]) < 0.5, $"kept checkpoint scores nll {nll}; the stage logged {logged[12]} at its end\n{r}");
        // What the run did after it was not sane: huge or NaN.
        Assert.Contains(logged.Where(kv => kv.Key > 12), kv => !(kv.Value < 3 * nll));
    }

    [Fact]
    public void ANormalTrainRunIsUnaffected()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        Assert.DoesNotContain("spike_streak", fx.TrainResult.Out);
        Assert.Contains("summary completed=true", fx.TrainResult.Out);
    }

    [Fact]
    public void SpikeOptionsAreCheckedBeforeTraining()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines());
        foreach (var (option, value) in new[] { ("--spike-factor", "1"), ("--spike-factor", "-3"), ("--spike-patience", "0"), ("--spike-window", "0") })
        {
            var r = CliRunner.Run(CliRunner.TinyTrain(corpus, Path.Combine(dir, "model"), "pretrain:2", option, value));
            AssertError(r, ExitCodes.Usage, option);
            Assert.Equal("", r.Out);
        }
    }

    /// <summary>A copy of the fixture's model with <paramref name="tensor"/> filled with <paramref name="value"/>.</summary>
    private string Broken(string tensor, float value)
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var dir = Path.Combine(CliRunner.TempDir(), "broken");
        var loaded = ModelDirectory.Load(fx.Model);
        using (var lm = loaded.Model)
        {
            using (no_grad()) lm.UniqueParameters().Single(p => p.Name == tensor).Param.fill_(value);
            ModelDirectory.Save(dir, lm, loaded.Meta);
        }
        return dir;
    }

    [Fact]
    public void ScoreEvaluateAndGenerateRefuseAModelWithNaNWeights()
    {
        var model = Broken("model.layers.0.self_attn.o_proj.weight", float.NaN);
        var outFile = Path.Combine(Path.GetDirectoryName(model)!, "scores.csv");
        foreach (var args in new[]
        {
            new[] { "score", "--model", model, "--input", fx.Corpus, "--out", outFile },
            ["score", "--model", model, "--input", fx.Corpus],
            ["evaluate", "--model", model, "--input", fx.Corpus, "--seq-len", "16"],
            ["generate", "--model", model, "--prompt", "the cat", "-n", "4"],
            ["pareto", "--model", model, "--input", fx.Corpus, "--seq-len", "16", "--out-dir", Path.Combine(Path.GetDirectoryName(model)!, "p")],
        })
        {
            var r = CliRunner.Run([.. args, "--threads", "1"]);
            AssertError(r, ExitCodes.NumericalError, "not finite", "model.layers.0.self_attn.o_proj.weight");
            Assert.Equal("", r.Out);                                          // no scores, tables or text
        }
        Assert.False(File.Exists(outFile));
        // Continuing to train it is refused as well, before any work.
        var t = CliRunner.Run([.. CliRunner.TinyTrain(fx.Corpus, Path.Combine(Path.GetDirectoryName(model)!, "m2"), "pretrain:1")
            .Where(a => a is not "--hidden-size" and not "32" and not "--vocab-size" and not "280"), "--init", model]);
        AssertError(t, ExitCodes.NumericalError, "not finite");
    }

    [Fact]
    public void ScoreEvaluateAndGenerateRefuseOutputsThatOverflow()
    {
        // Finite weights, but logits of ±Inf: the outputs are checked where they reach the host.
        var model = Broken("lm_head.weight", 3e38f);
        foreach (var args in new[]
        {
            new[] { "score", "--model", model, "--input", fx.Corpus },
            ["evaluate", "--model", model, "--input", fx.Corpus, "--seq-len", "16"],
            ["generate", "--model", model, "--prompt", "the cat", "-n", "4"],
        })
        {
            var r = CliRunner.Run([.. args, "--threads", "1"]);
            AssertError(r, ExitCodes.NumericalError, "not finite", "overflowed");
            Assert.Equal("", r.Out);
        }
    }

    [Fact]
    public void DivergenceAndNonFiniteErrorsMapToExitCode6()
    {
        Assert.Equal(ExitCodes.NumericalError, CliApp.Classify(new LoopRpt.Training.TrainingDivergedException("diverged", LoopRpt.Training.DivergenceKind.LossSpike, "pretrain", 3, 3, null, 0)).Code);
        Assert.Equal(ExitCodes.NumericalError, CliApp.Classify(new NotFiniteNumberException("nan")).Code);
        Assert.Equal(ExitCodes.Failure, CliApp.Classify(new InvalidOperationException("other")).Code);
    }

    [Fact]
    public void AConfigWithoutNumKeyValueHeadsMeansNumAttentionHeads()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        var copy = Path.Combine(CliRunner.TempDir(), "model");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(fx.Model)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        var configPath = Path.Combine(copy, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        Assert.Equal(2, (int)config["num_key_value_heads"]!);                // the tiny preset groups 4 query heads on 2
        Assert.True(config.Remove("num_key_value_heads"));
        File.WriteAllText(configPath, config.ToJsonString());

        // The default is num_attention_heads (4), as in Hugging Face configs, not 16 (which would not even divide 4):
        // this model's key/value projections are 2 heads wide, so loading names the mismatching tensor.
        Assert.Equal(4, ModelDirectory.ReadConfig(copy).NumKeyValueHeads);
        var r = CliRunner.Run("score", "--model", copy, "--input", fx.Corpus, "--threads", "1");
        AssertError(r, ExitCodes.ModelError, "k_proj");
        Assert.DoesNotContain("must divide", r.Err);
    }
}
