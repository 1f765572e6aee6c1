using System.Xml.Linq;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Evaluation;

public class LoopEvaluatorTests
{
    private const int Vocab = 8;     // small vocab: entropies spread around the 0.5 / 1.0 / 1.5 thresholds

    internal static TokenBatch RandomBatch(int b, int s, int seed, bool pad = false)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, b).Select(i => (ReadOnlyMemory<int>)Enumerable.Range(0, pad && i == b - 1 ? s - 3 : s + 1).Select(_ => rng.Next(Vocab)).ToArray()).ToList();
        return TokenBatch.FromWindows(rows, s);
    }

    internal static OuroForCausalLM Model(long seed)
    {
        var lm = TestUtil.TinyModel(vocab: Vocab, seed: seed);
        // Sharpen the LM head so that entropies are not all near ln 8, and give the gate a spread of exits.
        using (no_grad())
        {
            lm.LmHead.weight!.mul_(8);
            lm.Backbone.early_exit_gate.weight!.mul_(40);
        }
        return lm;
    }

    /// <summary>Independent host computation through ExitMode (LogitsAtSteps path) and host softmax entropies.</summary>
    [Fact]
    public void MatchesHostComputation()
    {
        using var lm = Model(5);
        using var baseLm = Model(9);
        var batches = new[] { RandomBatch(3, 12, 1), RandomBatch(2, 12, 2, pad: true) };
        double[] qs = [0.0, 0.3, 0.5, 0.9, 1.0];
        var result = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs }).Evaluate(lm, batches, baseLm, "m");

        var th = new[] { double.NegativeInfinity, 0.5, 1.0, 1.5 };
        var n = new double[4];
        var step = new double[4, 4];
        var qAcc = new double[4, qs.Length];
        var qExit = new double[4, qs.Length];
        var stepNll = new double[4, 4];
        var qNll = new double[4, qs.Length];
        // -log softmax(z)[target] in double from float logits.
        static double Nll(float[] logits, int i, long target)
        {
            var z = logits.Skip(i * Vocab).Take(Vocab).Select(x => (double)x).ToArray();
            double max = z.Max();
            return max + Math.Log(z.Sum(x => Math.Exp(x - max))) - z[target];
        }
        using (no_grad())
            foreach (var batch in batches)
            {
                var (inputs, targets) = batch.ToTensors(lm.Device);
                var tg = targets.data<long>().ToArray();
                var o = lm.Forward(inputs);
                var baseLogits = TestUtil.ToArray(baseLm.Logits(baseLm.Forward(inputs).Hidden[^1]));
                var perStep = Enumerable.Range(0, 4).Select(t => lm.Logits(o.Hidden[t]).argmax(-1).data<long>().ToArray()).ToArray();
                var perQ = qs.Select(q => (Pred: ExitMode.Q(q).Logits(lm, o).argmax(-1).data<long>().ToArray(),
                                            Steps: ExitMode.Q(q).Steps(o.ExitProbabilities()).data<long>().ToArray(),
                                            Logits: TestUtil.ToArray(ExitMode.Q(q).Logits(lm, o)))).ToArray();
                var stepLogits = Enumerable.Range(0, 4).Select(t => TestUtil.ToArray(lm.Logits(o.Hidden[t]))).ToArray();
                for (int i = 0; i < tg.Length; i++)
                {
                    if (tg[i] < 0) continue;
                    var z = baseLogits.Skip(i * Vocab).Take(Vocab).Select(x => (double)x).ToArray();
                    double max = z.Max(), logZ = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
                    double h = -z.Sum(x => Math.Exp(x - logZ) * (x - logZ));
                    for (int k = 0; k < 4; k++)
                    {
                        if (!(h > th[k])) continue;
                        n[k]++;
                        for (int t = 0; t < 4; t++)
                        {
                            step[k, t] += perStep[t][i] == tg[i] ? 1 : 0;
                            stepNll[k, t] += Nll(stepLogits[t], i, tg[i]);
                        }
                        for (int j = 0; j < qs.Length; j++)
                        {
                            qAcc[k, j] += perQ[j].Pred[i] == tg[i] ? 1 : 0;
                            qExit[k, j] += perQ[j].Steps[i] + 1;
                            qNll[k, j] += Nll(perQ[j].Logits, i, tg[i]);
                        }
                    }
                }
            }
        // bitwise: integer-valued (token counts / exit steps) held in a float type
        Assert.Equal(3 * 12 + 12 + 12 - 4, n[0]);          // the padded row has 9 tokens: 8 targets
        Assert.True(n[3] > 0 && n[3] < n[0], $"hard bucket should be a proper subset: {n[3]} of {n[0]}");
        for (int k = 0; k < 4; k++)
        {
            var b = result.Buckets[k];
            Assert.Equal((long)n[k], b.Tokens);
            for (int t = 0; t < 4; t++)
            {
                Tolerance.AssertClose(step[k, t] / n[k], b.StepAccuracy[t], absolute: 1e-9);
                Tolerance.AssertClose(stepNll[k, t] / n[k], b.StepNegativeLogLikelihood[t], absolute: 1e-5);        // float32 log-softmax vs double
            }
            for (int j = 0; j < qs.Length; j++)
            {
                Tolerance.AssertClose(qAcc[k, j] / n[k], b.QExit[j].Accuracy, absolute: 1e-9);
                Tolerance.AssertClose(qExit[k, j] / n[k], b.QExit[j].MeanExitStep, absolute: 1e-9);
                Tolerance.AssertClose(qNll[k, j] / n[k], b.QExit[j].NegativeLogLikelihood, absolute: 1e-5);
            }
            Tolerance.AssertClose(b.LastStepAccuracy, b.AtQ(1.0)!.Accuracy, absolute: 1e-12);
            Tolerance.AssertClose(4.0, b.AtQ(1.0)!.MeanExitStep, absolute: 1e-12);
            Tolerance.AssertClose(b.StepAccuracy[0], b.AtQ(0.0)!.Accuracy, absolute: 1e-12);
        }
        Assert.True(result.BucketsFromBaseModel);
        var spread = result["All"].AtQ(0.5)!.MeanExitStep;
        Assert.InRange(spread, 1.0001, 3.9999);
    }

    /// <summary>
    /// The adaptive pass takes each q's figures from the compute-saving scorer (compared with the scorer called directly),
    /// keeps the full-depth step figures, says so in its tables, and at q = 1 equals the full-depth last step.
    /// </summary>
    [Fact]
    public void AdaptivePassTakesQExitFiguresFromTheAdaptiveScorer()
    {
        using var lm = Model(5);
        var batches = new[] { RandomBatch(3, 12, 1), RandomBatch(2, 12, 2, pad: true) };
        double[] qs = [0.3, 0.6, 1.0];
        var full = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs }).Evaluate(lm, batches);
        var adaptive = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs, Pass = EvaluationPass.Adaptive }).Evaluate(lm, batches);
        Assert.Equal(EvaluationPass.Adaptive, adaptive.Pass);
        Assert.Contains("adaptive pass", adaptive.ToMarkdown());
        Assert.Contains("every loop computed", full.ToMarkdown());
        for (int k = 0; k < 4; k++)
            Tolerance.AssertClose(full.Buckets[k].StepAccuracy, adaptive.Buckets[k].StepAccuracy, $"bucket {k}");

        for (int j = 0; j < qs.Length; j++)
        {
            var scorer = new LoopRpt.Inference.AdaptiveExitScorer(lm, new LoopRpt.Inference.AdaptiveExitScorerOptions { Exit = ExitMode.Q(qs[j]) });
            long tokens = 0, correct = 0, exits = 0;
            double logProb = 0;
            foreach (var batch in batches)
            {
                var (inputs, targets) = batch.ToTensors(lm.Device);
                using var score = scorer.Score(inputs, targets: targets);
                var tg = score.Targets.data<long>().ToArray();
                var pred = score.Predictions.data<long>().ToArray();
                var steps = score.ExitSteps.data<long>().ToArray();
                var gold = score.GoldLogProbs.data<float>().ToArray();
                for (int i = 0; i < tg.Length; i++)
                {
                    if (tg[i] < 0) continue;
                    tokens++;
                    correct += pred[i] == tg[i] ? 1 : 0;
                    exits += steps[i] + 1;
                    logProb += gold[i];
                }
            }
            var p = adaptive["All"].QExit[j];
            Assert.Equal(tokens, adaptive["All"].Tokens);
            Tolerance.AssertClose((double)correct / tokens, p.Accuracy, absolute: 1e-12);
            Tolerance.AssertClose((double)exits / tokens, p.MeanExitStep, absolute: 1e-12);
            Tolerance.AssertClose(-logProb / tokens, p.NegativeLogLikelihood, absolute: 1e-6);
        }
        var last = adaptive["All"].AtQ(1.0)!;
        Tolerance.AssertClose(4.0, last.MeanExitStep, absolute: 1e-12);
        Tolerance.AssertClose(full["All"].StepNegativeLogLikelihood[^1], last.NegativeLogLikelihood, absolute: 1e-5);
        Assert.True(adaptive["All"].AtQ(0.3)!.MeanExitStep < 4.0, "q = 0.3 should exit some tokens early");
    }

    [Fact]
    public void CountsAccumulateAcrossBatches()
    {
        using var lm = Model(5);
        var b1 = RandomBatch(2, 10, 3);
        var b2 = RandomBatch(3, 10, 4, pad: true);
        var ev = new LoopEvaluator();
        var both = ev.Evaluate(lm, [b1, b2]);
        var r1 = ev.Evaluate(lm, [b1]);
        var r2 = ev.Evaluate(lm, [b2]);
        Assert.False(both.BucketsFromBaseModel);
        for (int k = 0; k < 4; k++)
        {
            long n1 = r1.Buckets[k].Tokens, n2 = r2.Buckets[k].Tokens;
            Assert.Equal(n1 + n2, both.Buckets[k].Tokens);
            if (n1 == 0 || n2 == 0) continue;
            for (int t = 0; t < 4; t++)
                Tolerance.AssertClose((r1.Buckets[k].StepAccuracy[t] * n1 + r2.Buckets[k].StepAccuracy[t] * n2) / (n1 + n2), both.Buckets[k].StepAccuracy[t], absolute: 1e-9);
            for (int j = 0; j < both.QValues.Count; j++)
                Tolerance.AssertClose((r1.Buckets[k].QExit[j].MeanExitStep * n1 + r2.Buckets[k].QExit[j].MeanExitStep * n2) / (n1 + n2), both.Buckets[k].QExit[j].MeanExitStep, absolute: 1e-9);
        }
    }

    [Fact]
    public void TablesCsvAndSvg()
    {
        using var a = Model(5);
        using var b = Model(6);
        var batches = new[] { RandomBatch(2, 10, 3) };
        var ev = new LoopEvaluator(new LoopEvaluationOptions { QValues = [0.5, 0.7, 1.0] });
        var ra = ev.Evaluate(a, batches, a, "base");
        var rb = ev.Evaluate(b, batches, a, "looprpt");

        var md = ra.ToMarkdown();
        Assert.Contains("| bucket | tokens | s1 | s2 | s3 | s4 | last |", md);
        Assert.Contains("| all tokens | 20 |", md);
        Assert.Contains("| H > 1.5 nats |", md);
        var cmp = LoopEvaluation.CompareMarkdown([ra, rb]);
        Assert.Contains("q=0.5 acc @ exit", cmp);
        Assert.Equal(2 + 8, cmp.Trim().Split('\n').Length);   // header, rule, 4 buckets × 2 models

        var csv = LoopEvaluation.ToCsv([ra, rb]).Trim().Split('\n');
        Assert.Equal("model,bucket,tokens,kind,x,accuracy,mean_exit_step,nll", csv[0]);
        Assert.Equal(1 + 2 * 4 * (4 + 3), csv.Length);
        Assert.StartsWith("base,All,20,step,1,", csv[1]);

        var svg = XDocument.Parse(ParetoPlot.ToSvg([ra, rb], "Pareto <test>"));
        XNamespace ns = "http://www.w3.org/2000/svg";
        int panelsWithTokens = ra.Buckets.Count(x => x.Tokens > 0);
        Assert.True(panelsWithTokens >= 2);
        Assert.Equal(panelsWithTokens * 2 * 2, svg.Descendants(ns + "polyline").Count());
        Assert.Contains(svg.Descendants(ns + "text"), t => t.Value == "Pareto <test>");
    }

    [Fact]
    public void WindowsCoverTheStreamOnce()
    {
        var tokens = Enumerable.Range(0, 101).ToArray();
        var batches = LoopEvaluator.Windows(tokens, 3, 10).ToList();
        Assert.Equal(4, batches.Count);                   // 10 windows of 11 tokens, stride 10: 3 + 3 + 3 + 1
        var targets = batches.SelectMany(b => b.Targets).Where(t => t >= 0).ToArray();
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), targets);
        Assert.Single(LoopEvaluator.Windows(tokens, 3, 10, maxBatches: 1));
    }

    [Fact]
    public void BadOptionsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopEvaluator(new LoopEvaluationOptions { QValues = [0.5, 1.5] }));
        Assert.Throws<ArgumentException>(() => new LoopEvaluator(new LoopEvaluationOptions { QValues = [] }));
        using var a = Model(5);
        using var other = TestUtil.TinyModel(vocab: 16);
        Assert.Throws<ArgumentException>(() => new LoopEvaluator().Evaluate(a, [RandomBatch(1, 4, 1)], other));
    }
}
