using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Evaluation;

/// <summary>Issue 19 §4: plain bucket labels, quantile (top-fraction) buckets, configurable thresholds.</summary>
public class EntropyBucketsTests
{
    private const int Vocab = 8;

    // The evaluator tests' batches and sharpened model: entropies spread around the thresholds.
    private static TokenBatch RandomBatch(int b, int s, int seed, bool pad = false) => LoopEvaluatorTests.RandomBatch(b, s, seed, pad);

    private static OuroForCausalLM Model(long seed) => LoopEvaluatorTests.Model(seed);

    [Fact]
    public void ParseAndToStringRoundTrip()
    {
        // bitwise: bucket rules parsed from text or printed and parsed back: settings, not computed
        Assert.Equal(EntropyBuckets.Published, EntropyBuckets.Parse("entropy"));
        Assert.Equal(EntropyBuckets.Published, EntropyBuckets.Parse("entropy:0.5,1,1.5"));
        Assert.Equal(EntropyBuckets.TopFractions, EntropyBuckets.Parse("top"));
        Assert.Equal(new EntropyBuckets(BucketRule.TopFraction, 0.6, 0.25, 0.1), EntropyBuckets.Parse("top:60,25%,10"));
        Assert.Equal("top:50,30,20", EntropyBuckets.TopFractions.ToString());
        Assert.Equal("entropy:0.5,1,1.5", EntropyBuckets.Published.ToString());
        foreach (var b in new[] { EntropyBuckets.Published, EntropyBuckets.TopFractions, new EntropyBuckets(BucketRule.EntropyThreshold, 0.25, 2, 3.5) })
            Assert.Equal(b, EntropyBuckets.Parse(b.ToString()));
        foreach (var bad in new[] { "median", "top:50,30", "top:20,30,50", "top:50,30,0", "entropy:1,0.5,2", "entropy:a,b,c", "entropy:-1,0,1" })
            Assert.Throws<FormatException>(() => EntropyBuckets.Parse(bad));
    }

    [Fact]
    public void ThresholdPropertiesStillSetTheBuckets()
    {
        var o = new LoopEvaluationOptions { MediumThreshold = 1.2 };
        // bitwise: thresholds set as given, not computed
        Assert.Equal(new EntropyBuckets(BucketRule.EntropyThreshold, 0.5, 1.2, 1.5), o.Buckets);
        o.Buckets = EntropyBuckets.TopFractions;
        // bitwise: a setting read back as given, not computed
        Assert.Equal(1.5, o.HardThreshold);                       // the published value: not a threshold rule
        o.HardThreshold = 3;
        Assert.Equal(new EntropyBuckets(BucketRule.EntropyThreshold, 0.5, 1.0, 3), o.Buckets);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopEvaluator(new LoopEvaluationOptions { EasyThreshold = 2 }));   // 2 > Medium 1.0
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopEvaluator(new LoopEvaluationOptions { Buckets = new(BucketRule.TopFraction, 0.2, 0.5, 0.1) }));
    }

    [Fact]
    public void LabelsSayWhatEachBucketHolds()
    {
        using var lm = Model(5);
        var batches = new[] { RandomBatch(3, 12, 1) };
        var r = new LoopEvaluator(new LoopEvaluationOptions { QValues = [0.5, 1.0] }).Evaluate(lm, batches);
        Assert.Equal(["all tokens", "H > 0.5 nats", "H > 1 nats", "H > 1.5 nats"], r.Buckets.Select(b => b.Label));
        var md = r.ToMarkdown();
        Assert.Contains("| H > 0.5 nats |", md);
        Assert.DoesNotContain("Easy", md);
        Assert.Contains("| all tokens |", LoopEvaluation.CompareMarkdown([r]));
    }

    /// <summary>
    /// Top-fraction buckets hold the ⌈f·N⌉ highest-entropy tokens by the base model (computed here on the host), and equal
    /// the threshold evaluation at the cuts they report.
    /// </summary>
    [Fact]
    public void TopFractionBucketsHoldTheirShareOfTheHighestEntropyTokens()
    {
        using var lm = Model(5);
        using var baseLm = Model(9);
        var batches = new[] { RandomBatch(3, 12, 1), RandomBatch(2, 12, 2, pad: true) };
        double[] qs = [0.3, 0.5, 1.0];
        var top = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs, Buckets = EntropyBuckets.TopFractions }).Evaluate(lm, batches, baseLm, "m");

        // Host entropies of the base model on every real target.
        var h = new List<double>();
        using (no_grad())
            foreach (var batch in batches)
            {
                var (inputs, targets) = batch.ToTensors(lm.Device);
                var tg = targets.data<long>().ToArray();
                var logits = TestUtil.ToArray(baseLm.Logits(baseLm.Forward(inputs).Hidden[^1]));
                for (int i = 0; i < tg.Length; i++)
                {
                    if (tg[i] < 0) continue;
                    var z = logits.Skip(i * Vocab).Take(Vocab).Select(x => (double)x).ToArray();
                    double max = z.Max(), logZ = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
                    h.Add(-z.Sum(x => Math.Exp(x - logZ) * (x - logZ)));
                }
            }
        int n = h.Count;
        Assert.Equal(n, top["All"].Tokens);
        var sorted = h.OrderDescending().ToArray();
        foreach (var (name, f) in new[] { ("Easy", 0.5), ("Medium", 0.3), ("Hard", 0.2) })
        {
            var b = top[name];
            int k = (int)Math.Ceiling(f * n);
            Assert.Equal(k, b.Tokens);
            // bitwise: a setting read back as given, not computed
            Assert.Equal(f, b.TopFraction);
            Assert.InRange(b.MinEntropy, sorted[k] - 1e-6, sorted[k - 1] + 1e-6);       // the cut lies between the k-th and the next
            Assert.Equal(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"top {100 * f:0} % (H > {b.MinEntropy:0.###} nats)"), b.Label);
        }
        Assert.True(top["Hard"].Tokens < top["Medium"].Tokens && top["Medium"].Tokens < top["Easy"].Tokens);

        // The same tokens as thresholds at those cuts: identical results.
        var cuts = new EntropyBuckets(BucketRule.EntropyThreshold, top["Easy"].MinEntropy, top["Medium"].MinEntropy, top["Hard"].MinEntropy);
        var same = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs, Buckets = cuts }).Evaluate(lm, batches, baseLm, "m");
        for (int k = 0; k < 4; k++)
        {
            // bitwise: the same model, batches and pass; only the form of the bucket rule differs
            Assert.Equal(same.Buckets[k].Tokens, top.Buckets[k].Tokens);
            Assert.Equal(same.Buckets[k].StepAccuracy, top.Buckets[k].StepAccuracy);
            Assert.Equal(same.Buckets[k].QExit, top.Buckets[k].QExit);
        }

        // Without a base model the model's own entropy decides (batches given lazily: materialized for the two passes).
        var own = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs, Buckets = EntropyBuckets.TopFractions }).Evaluate(lm, batches.Select(b => b), null, "own");
        Assert.Equal((long)Math.Ceiling(0.2 * n), own["Hard"].Tokens);
        Assert.False(own.BucketsFromBaseModel);
    }

    [Fact]
    public void ParetoTablesComePerBucketWithAColumnPerModel()
    {
        using var a = Model(5);
        using var b = Model(6);
        var batches = new[] { RandomBatch(2, 10, 3) };
        var ev = new LoopEvaluator(new LoopEvaluationOptions { QValues = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0] });
        var md = LoopEvaluation.CompareMarkdownByBucket([ev.Evaluate(a, batches, a, "base"), ev.Evaluate(b, batches, a, "looprpt")]);
        var tables = md.Split("### ", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(4, tables.Length);
        Assert.StartsWith("all tokens (20 tokens)", tables[0]);
        Assert.StartsWith("H > 0.5 nats (", tables[1]);
        foreach (var t in tables)
        {
            var rows = t.Split('\n').Where(l => l.StartsWith('|')).ToArray();
            Assert.Equal("| read-out | base | looprpt |", rows[0]);
            Assert.Equal(2 + 4 + 12, rows.Length);            // header, rule, s1..s4, 12 q values
            Assert.All(rows, r => Assert.Equal(4, r.Count(ch => ch == '|')));
        }
        Assert.Contains("| q=0.5 | ", md);
    }
}
