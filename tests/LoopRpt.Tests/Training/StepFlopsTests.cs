using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRpt.Tests.Training;

/// <summary>The analytic FLOP count against a count by hand for a tiny config (docs/looprpt.md "Compute per step").</summary>
public sealed class StepFlopsTests
{
    // h = 4, 2 heads (and KV heads) of dimension 2, FFN 8, 1 layer, T = 2 loops, V = 10; S = 3 positions, 2 rows.
    private static OuroConfig Tiny() => new()
    {
        VocabSize = 10, HiddenSize = 4, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 2, TotalUtSteps = 2,
    };

    // By hand, per token and loop: projections 2 × (4·2·2·2 + 4·2·2·2) = 128, MLP 2 × 3 × 4 × 8 = 192, attention
    // 2 × 2 × 3 × 2 × 2 = 48 → 368; gate 2 × 4 = 8; LM head 2 × 4 × 10 = 80. N = 2 rows × 3 positions = 6 tokens.
    [Fact]
    public void Stage1IsOnePassWithAReadOutAtEveryLoopAndTwiceThatBackward()
    {
        var f = StepFlops.Stage1(Tiny(), rows: 2, sequenceLength: 3);
        Tolerance.AssertClose(5472, f.Forward, "forward: 6 tokens × 2 loops × (368 + 8 + 80)");
        Tolerance.AssertClose(10944, f.Backward, "backward: twice the forward");
        Tolerance.AssertClose(3 * 16416, StepFlops.Stage1(Tiny(), rows: 2, sequenceLength: 3, microBatches: 3).Total, "three micro-batches");
    }

    [Fact]
    public void LoopRptCountsTeacherSharedLoopCleanPassMetricAndRollouts()
    {
        // Published options but G = 2. Rows of 3 real targets keep ⌈(3 − 1)(1 − 0.8)⌉ = 1 hard token each: K = 2.
        // branch (loops 1..T−1 and every gate) = 6 × (368 + 2 × 8) = 2304; hard read-outs = 2 × 2 × 80 = 320.
        var o = new LoopRptObjectiveOptions { Rollouts = 2 };
        var f = StepFlops.LoopRpt(Tiny(), [3, 3], 3, o);
        var parts = f.Terms.ToDictionary(t => t.Name);
        Tolerance.AssertClose(6 * 2 * 376 + 6 * 80 + 320, parts["teacher pass (no gradient)"].Forward, "teacher");
        Tolerance.AssertClose(0, parts["teacher pass (no gradient)"].Backward, "teacher backward");
        Tolerance.AssertClose(2208, parts["shared loop 0"].Forward, "loop 0 once: 6 × 368");
        Tolerance.AssertClose(4416, parts["shared loop 0"].Backward, "loop 0 backward once");
        Tolerance.AssertClose(2624, parts["clean pass"].Forward, "clean: 2304 + 320");
        Tolerance.AssertClose(5248, parts["clean pass"].Backward, "clean backward");
        Tolerance.AssertClose(960, parts["clean per-step loss metric (no gradient)"].Forward, "metric: 6 × 2 × 80");
        Tolerance.AssertClose(5248, parts["rollouts"].Forward, "2 rollouts × 2624");
        Tolerance.AssertClose(10496, parts["rollouts"].Backward, "KL through the read-outs: 2 × 2 × 2624");
        Tolerance.AssertClose(16352, f.Forward, "forward");
        Tolerance.AssertClose(20160, f.Backward, "backward");
        Assert.Equal(5, f.Terms.Count);

        // No KL: the rollouts' read-outs have no backward. Chunks: the rollouts' extra forward without a graph.
        Tolerance.AssertClose(2 * 2 * 2304, StepFlops.LoopRpt(Tiny(), [3, 3], 3, new LoopRptObjectiveOptions { Rollouts = 2, KlCoef = 0 }).Terms.Single(t => t.Name == "rollouts").Backward, "no KL");
        Tolerance.AssertClose(16352 + 5248, StepFlops.LoopRpt(Tiny(), [3, 3], 3, new LoopRptObjectiveOptions { Rollouts = 2, RolloutsPerMicroBatch = 1 }).Forward, "chunked");
        // All tokens: K = 6, read-outs 6 × 2 × 80 = 960 instead of 320, in the teacher, the clean pass and each rollout (forward and backward).
        var all = StepFlops.LoopRpt(Tiny(), [3, 3], 3, new LoopRptObjectiveOptions { Rollouts = 2, HardTokens = HardTokenMode.All });
        Tolerance.AssertClose(16352 + 4 * 640, all.Forward, "all tokens forward");
        Tolerance.AssertClose(20160 + 3 * 2 * 640, all.Backward, "all tokens backward");
    }

    [Theory]
    [InlineData(16, 3)]     // ⌈15 × 0.2⌉ = 3: 20 %, not the 4 that a ≥-quantile cut kept
    [InlineData(10, 2)]
    [InlineData(6, 1)]
    [InlineData(1, 0)]
    [InlineData(0, 0)]
    public void HardTokensPerRowFollowTheTopFractionCut(int targets, long hard)
        => Assert.Equal(hard, StepFlops.HardTokens(targets, new LoopRptObjectiveOptions()));

    [Fact]
    public void InputsAreValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => StepFlops.Stage1(Tiny(), 0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => StepFlops.LoopRpt(Tiny(), [4], 3, new LoopRptObjectiveOptions()));
        Assert.Throws<ArgumentOutOfRangeException>(() => StepFlops.LoopRpt(Tiny(), [3], 3, new LoopRptObjectiveOptions { Rollouts = 1 }));
    }
}
