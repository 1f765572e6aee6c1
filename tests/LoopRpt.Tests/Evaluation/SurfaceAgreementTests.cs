using System.Globalization;
using LoopRpt.Cli.Commands;
using LoopRpt.Cli.Models;
using LoopRpt.Evaluation;
using LoopRpt.MLNet;
using LoopRpt.Model;
using LoopRpt.Tests.Cli;
using LoopRpt.Tests.MLNet;
using Microsoft.ML;

namespace LoopRpt.Tests.Evaluation;

/// <summary>
/// Issue 16 §1: `looprpt evaluate` / `looprpt pareto` and ML.NET's Evaluate / ParetoSweep report the same figures for the
/// same model and tokens. The CLI runs in-process and writes its CSVs; ML.NET scores the same windows as rows.
/// Tolerance: the two surfaces batch and pad differently (CLI rows of 16 inputs, ML.NET rows padded to 32), so their
/// float32 GEMMs round differently: log-likelihoods agree to 1e-4 nats, and an accuracy or mean exit may differ by
/// what one token flipping its argmax or exit step would change.
/// </summary>
public sealed class SurfaceAgreementTests(TrainedModelFixture fx) : IClassFixture<TrainedModelFixture>
{
    private const int S = 16;

    private sealed record Row(string Bucket, long Tokens, string Kind, double X, double Accuracy, double MeanExit, double Nll);

    private static List<Row> ReadCsv(string path)
    {
        var c = CultureInfo.InvariantCulture;
        var lines = File.ReadAllLines(path);
        Assert.Equal("model,bucket,tokens,kind,x,accuracy,mean_exit_step,nll", lines[0]);
        return lines.Skip(1).Select(l => l.Split(',')).Select(f => new Row(f[1], long.Parse(f[2], c), f[3], double.Parse(f[4], c),
            double.Parse(f[5], c), double.Parse(f[6], c), double.Parse(f[7], c))).ToList();
    }

    /// <summary>The CLI's evaluation token stream, cut into its windows of S+1 tokens, as ML.NET rows.</summary>
    private TokenDoc[] Windows()
    {
        using var session = ModelSession.Load(fx.Model, "cpu", "float32");
        var tokens = EvaluationInputs.Stream(File.ReadAllLines(fx.Corpus), session.RequireCodec(), session.Model.Config.VocabSize, 0, S);
        var rows = new List<TokenDoc>();
        for (int start = 0; start + S + 1 <= tokens.Length; start += S) rows.Add(new TokenDoc { Tokens = tokens[start..(start + S + 1)] });
        return [.. rows];
    }

    [Fact]
    public void MlNetEvaluateAndParetoMatchTheCliOnTheSameModelAndTokens()
    {
        Assert.True(fx.TrainResult.Code == 0, fx.TrainResult.ToString());
        var dir = CliRunner.TempDir();
        try
        {
            var csv = Path.Combine(dir, "eval.csv");
            var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", $"{S}", "--batch-size", "4", "--q", "0.5,1",
                "--buckets", "top:50,30,20", "--csv", csv, "--threads", "1");
            Assert.True(r.Code == 0, r.ToString());
            var cli = ReadCsv(csv);
            r = CliRunner.Run("pareto", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", $"{S}", "--q", "0.3,0.5,0.8,1", "--out-dir", dir, "--threads", "1");
            Assert.True(r.Code == 0, r.ToString());
            var pareto = ReadCsv(Path.Combine(dir, "pareto.csv")).Where(x => x.Bucket == "All" && x.Kind == "qexit").ToList();

            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(Windows());
            using var last = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = fx.Model, ExitMode = ExitMode.Last, PerStepStatistics = true }).Fit(data);
            var m = ml.LoopRpt().Evaluate(last.Transform(data), buckets: EntropyBuckets.Parse("top:50,30,20"));

            long n = m.Tokens;
            int loops = m.StepAccuracy.Length;
            double oneToken = 1.0 / n + 1e-12;
            var all = cli.Where(x => x.Bucket == "All" && x.Kind == "step").ToList();
            Assert.Equal(loops, all.Count);
            Assert.Equal(all[0].Tokens, n);
            for (int t = 0; t < loops; t++) Assert.InRange(Math.Abs(m.StepAccuracy[t] - all[t].Accuracy), 0, oneToken);
            Assert.InRange(Math.Abs(m.Accuracy - all[^1].Accuracy), 0, oneToken);
            Tolerance.AssertClose(all[^1].Nll, m.NegativeLogLikelihood, absolute: 1e-4);
            Tolerance.AssertClose(loops, m.MeanExitStep, absolute: 1e-12);

            // The method's nested buckets by the model's own last-step entropy: the same tokens in each, the same figures.
            Assert.Equal(EntropyBuckets.Names, m.EntropyBuckets.Select(b => b.Name));
            foreach (var b in m.EntropyBuckets)
            {
                var c = cli.Where(x => x.Bucket == b.Name && x.Kind == "step").Last();
                Assert.InRange(Math.Abs(b.Tokens - c.Tokens), 0, 1);                                  // a near-tie at a cut may move one token
                Assert.InRange(Math.Abs(b.Accuracy - c.Accuracy), 0, 2.0 / Math.Max(1, c.Tokens) + 1e-12);
            }
            Assert.True(m.EntropyBuckets[3].Tokens < m.EntropyBuckets[1].Tokens, "the hard bucket should be a strict subset here");

            // The Pareto sweep: ML.NET's and the CLI's q points.
            var points = ml.LoopRpt().ParetoSweep(last, data, [0.3, 0.5, 0.8, 1.0]);
            // bitwise: the q values given, passed through unchanged
            Assert.Equal(pareto.Select(p => p.X), points.Select(p => p.Threshold));
            for (int i = 0; i < points.Count; i++)
            {
                Assert.InRange(Math.Abs(points[i].Accuracy - pareto[i].Accuracy), 0, oneToken);
                Assert.InRange(Math.Abs(points[i].MeanExitStep - pareto[i].MeanExit), 0, (loops - 1.0) / n + 1e-12);
                Tolerance.AssertClose(pareto[i].Nll, points[i].NegativeLogLikelihood, absolute: 1e-4);
            }
            Tolerance.AssertClose(m.Accuracy, points[^1].Accuracy, absolute: 1e-12);                                       // q = 1 is the last step on both
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
