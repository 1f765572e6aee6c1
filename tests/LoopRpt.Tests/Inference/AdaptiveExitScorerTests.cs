using TorchSharp;
using LoopRpt.Inference;
using LoopRpt.Model;
using static LoopRpt.Tests.Inference.InferenceTestUtil;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Inference;

public class AdaptiveExitScorerTests
{
    [Fact]
    public void FullDepthFastPathEqualsReferenceForward()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var ids = TestUtil.RandomIds(3, 11, 64, seed: 5);
        var (refGold, _, refArgmax) = Reference(lm, ids, ExitMode.Last, Shifted(ids));
        using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(1.0) }).Score(ids);
        Assert.True(Same(score.GoldLogProbs, refGold), "q = 1 must reproduce the full-depth path bit for bit");
        Assert.Equal(Longs(refArgmax), Longs(score.Predictions));
        Assert.All(Longs(score.ExitSteps), s => Assert.Equal(3, s));
        // bitwise: ratios of loop counts over 4 loops, exact in binary
        Assert.Equal(1.0, score.ComputeFraction);
        Assert.Equal(4.0, score.MeanExitStep);
    }

    [Fact]
    public void QExitMatchesReferenceWhereNoEarlierTokenExitedFirst()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var ids = TestUtil.RandomIds(4, 16, 64, seed: 7);
        var targets = Shifted(ids);
        var mode = ExitMode.Q(0.6);
        var (refGold, refSteps, _) = Reference(lm, ids, mode, targets);
        using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = mode }).Score(ids);

        var rs = Longs(refSteps);
        var fs = Longs(score.ExitSteps);
        var rg = TestUtil.ToArray(refGold);
        var fg = TestUtil.ToArray(score.GoldLogProbs);
        Assert.Contains(rs, s => s == 0);                 // the gate really spreads exits, so the test can fail
        Assert.True(rs.Contains(3), string.Join(",", rs));
        int exact = 0, approximate = 0;
        for (int b = 0; b < 4; b++)
        {
            long minPrefix = long.MaxValue;
            for (int i = 0; i < 16; i++)
            {
                int k = b * 16 + i;
                // Token i saw only its own computation if no earlier token exited before it: then nothing was approximated.
                if (minPrefix >= rs[k])
                {
                    Assert.Equal(rs[k], fs[k]);
                    Tolerance.AssertClose(rg[k], fg[k], absolute: 1e-4);
                    exact++;
                }
                else approximate++;
                minPrefix = Math.Min(minPrefix, rs[k]);
            }
        }
        Assert.True(exact >= 8 && approximate >= 8, $"exact {exact}, approximate {approximate}");
        Assert.True(score.ComputeFraction < 1.0);
        Tolerance.AssertClose(Longs(score.ExitSteps).Average(s => s + 1.0), score.MeanExitStep, absolute: 1e-9);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void FixedStepEqualsReferenceReadout(int step)
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var ids = TestUtil.RandomIds(2, 10, 64, seed: 9);
        var (refGold, _, _) = Reference(lm, ids, ExitMode.Fixed(step), Shifted(ids));
        using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Fixed(step) }).Score(ids);
        Assert.True(allclose(score.GoldLogProbs, refGold, 1e-5, 1e-5));
        Assert.Equal(step + 1, score.LoopsRun);
        // bitwise: ratios of loop counts over 4 loops, exact in binary
        Assert.Equal((step + 1) / 4.0, score.ComputeFraction);
    }

    [Fact]
    public void EveryTokenExitingSkipsTheRemainingLoops()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel(gateScale: 1, gateBias: 30);   // lambda ~ 1: CDF(0) ~ 1 >= q
        var ids = TestUtil.RandomIds(2, 8, 64, seed: 2);
        var (refGold, refSteps, _) = Reference(lm, ids, ExitMode.Q(0.9), Shifted(ids));
        Assert.All(Longs(refSteps), s => Assert.Equal(0, s));
        using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.9) }).Score(ids);
        Assert.Equal(1, score.LoopsRun);
        // bitwise: ratios of loop counts over 4 loops, exact in binary
        Assert.Equal(0.25, score.ComputeFraction);
        Assert.True(allclose(score.GoldLogProbs, refGold, 1e-5, 1e-5));
    }

    [Fact]
    public void ResultDoesNotDependOnBatchComposition()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) });
        var seqs = new[] { 12, 5, 9 }.Select((len, i) => Longs(TestUtil.RandomIds(1, len, 64, seed: 20 + i))).ToArray();
        var (ids, lengths) = AdaptiveExitScorer.Pad(seqs);
        using var together = scorer.Score(ids, lengths);
        long computed = 0;
        for (int i = 0; i < seqs.Length; i++)
        {
            using var alone = scorer.Score(tensor(seqs[i], [1, seqs[i].Length]));
            int len = seqs[i].Length;
            Assert.Equal(Longs(alone.ExitSteps), Longs(together.ExitSteps[i].narrow(0, 0, len)));
            Assert.Equal(Longs(alone.Predictions), Longs(together.Predictions[i].narrow(0, 0, len)));
            Assert.True(allclose(alone.GoldLogProbs[0], together.GoldLogProbs[i].narrow(0, 0, len), 1e-5, 1e-5));
            Assert.All(Longs(together.ExitSteps[i].narrow(0, len, 12 - len)), s => Assert.Equal(-1, s)); // padding not computed
            computed += alone.ComputedTokens;
        }
        Assert.Equal(computed, together.ComputedTokens);
        Assert.Equal(26 - 3, together.ScoredTokens);

        var summary = scorer.Evaluate(seqs);
        Assert.Equal(together.LoopSteps, summary.LoopSteps);
        Assert.Equal(together.Correct, summary.Correct);
        Tolerance.AssertClose(together.SumGoldLogProb, summary.SumGoldLogProb, absolute: 1e-4);
    }

    [Fact]
    public void ExplicitTargetsAreScoredAndStayTheCallers()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var ids = TestUtil.RandomIds(2, 6, 64, seed: 11);
        var targets = tensor(new long[] { 5, -1, 7, 7, -1, 2, 1, 1, 1, -1, -1, 3 }, [2, 6]);
        var (refGold, _, _) = Reference(lm, ids, ExitMode.Q(0.6), targets);
        using (var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) }).Score(ids, targets: targets))
        {
            Assert.Equal(8, score.ScoredTokens);
            Assert.Equal(12, score.ComputedTokens);
            Tolerance.AssertClose(TestUtil.ToArray(refGold)[0], TestUtil.ToArray(score.GoldLogProbs)[0], absolute: 1e-4);   // first token: no approximation
            // bitwise: positions not scored are filled with the constant 0
            Assert.Equal(0f, TestUtil.ToArray(score.GoldLogProbs)[1]);
        }
        Assert.Equal(7, targets[0, 2].item<long>());                                                  // still alive after the score is disposed
    }

    [Fact]
    public void BFloat16ModelScoresAndGenerates()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        lm.to(ScalarType.BFloat16);
        var ids = TestUtil.RandomIds(2, 12, 64, seed: 8);
        var (refGold, _, _) = Reference(lm, ids, ExitMode.Last, Shifted(ids));
        using var full = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Last }).Score(ids);
        Assert.True(Same(full.GoldLogProbs, refGold));
        using var adaptive = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) }).Score(ids);
        Assert.Equal(ScalarType.Float32, adaptive.GoldLogProbs.dtype);
        Assert.True(adaptive.ComputeFraction < 1.0);
        var generated = new LoopedGenerator(lm).Generate([1, 2, 3], new GenerationOptions { MaxNewTokens = 4, Exit = ExitMode.Q(0.6), Seed = 1 });
        Assert.Equal(4, generated.Tokens.Length);
    }

    [Fact]
    public void BadOptionsFailNamingTheParameter()
    {
        using var lm = TestUtil.TinyModel();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Expected }));
        Assert.Equal("options", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Fixed(4) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { BatchSize = 0 }));
    }

    /// <summary>
    /// Issue 20: scoring keeps no layer pass's intermediates once the pass is done, so the tensors alive between passes do
    /// not grow with depth (before, a 96-pass model kept every projection, attention and MLP tensor until the call ended).
    /// </summary>
    [Fact]
    public void LivingTensorsDoNotGrowWithLayerPasses()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel(loops: 6);
        var ids = TestUtil.RandomIds(2, 12, 64, seed: 3);
        var live = new List<long>();
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(1.0) })
        {
            AfterLayer = (_, _) => live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount),
        };
        using var score = scorer.Score(ids);
        Assert.Equal(6 * lm.Config.NumHiddenLayers, live.Count);
        // Between two passes at most a constant few tensors (the final norm's output per loop) are added, never a pass's
        // intermediates (a layer pass creates more than 20 tensors).
        Assert.True(live.Max() - live.Min() <= 6, $"live tensors grew over the passes: {string.Join(", ", live)}");
        var (refGold, _, _) = Reference(lm, ids, ExitMode.Last, Shifted(ids));
        Assert.True(Same(score.GoldLogProbs, refGold), "the scoped passes must compute the same values");
    }

    /// <summary>Issue 20: the LM head runs in row blocks and at most one block's (rows, vocabulary) logits are alive at a time.</summary>
    [Fact]
    public void TheLmHeadKeepsOnlyOneBlockOfLogitsAlive()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var ids = TestUtil.RandomIds(2, 10, 64, seed: 9);
        using var whole = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) }).Score(ids);
        var live = new List<long>();
        var blocks = new List<long>();
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) })
        {
            ReadOutBlockRows = 3,
            AfterReadOutBlock = rows => { blocks.Add(rows); live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount); },
        };
        using var blocked = scorer.Score(ids);
        Assert.Equal(7, blocks.Count);                                                 // 20 rows in blocks of 3
        Assert.Equal(20, blocks.Sum());
        // Each block leaves exactly its four small results (gold log-probs, argmax, its log-prob, entropy; (rows) each) behind.
        for (int i = 1; i < live.Count; i++) Assert.Equal(4, live[i] - live[i - 1]);
        // Blocked and unblocked read-outs agree (row blocks may round differently in the GEMM: 1e-5 nats).
        var a = TestUtil.ToArray(whole.GoldLogProbs);
        var b = TestUtil.ToArray(blocked.GoldLogProbs);
        for (int i = 0; i < a.Length; i++) Tolerance.AssertClose(a[i], b[i], absolute: 1e-5);
        Assert.Equal(Longs(whole.Predictions), Longs(blocked.Predictions));
    }
}
