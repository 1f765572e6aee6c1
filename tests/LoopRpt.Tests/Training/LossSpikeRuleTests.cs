using LoopRpt.Training;

namespace LoopRpt.Tests.Training;

/// <summary>The loss-spike rule itself, against hand-made sequences of logged losses.</summary>
public sealed class LossSpikeRuleTests
{
    private static LossSpikeRule Rule(double factor = 3, int patience = 3, int window = 20) => new(factor, patience, window);

    private static SpikeVerdict[] Feed(LossSpikeRule rule, params double[] values) => values.Select(rule.Observe).ToArray();

    [Fact]
    public void AFallingLossNeverFiresAndTheFirstValueOnlySetsTheBaseline()
    {
        var rule = Rule();
        Assert.True(rule.NeedsBaseline);
        // bitwise: no baseline yet: the threshold is the constant +infinity
        Assert.Equal(double.PositiveInfinity, rule.Threshold);
        var verdicts = Feed(rule, 10.4, 9.1, 7.7, 6.0, 5.2, 4.1, 3.3, 2.9, 2.5, 2.2);
        Assert.All(verdicts, v => Assert.Equal(SpikeVerdict.Sane, v));
        Assert.Equal(0, rule.Streak);
    }

    [Fact]
    public void NoiseAndAWarmupBumpDoNotFire()
    {
        // Seeded with the loss of the first weights, then a warmup bump of 40 %, noise, and a loss that has become small.
        var rule = Rule();
        rule.Seed(5.5);
        Assert.All(Feed(rule, 5.6, 6.9, 7.7, 6.2, 5.1, 4.4, 4.9, 3.8), v => Assert.NotEqual(SpikeVerdict.Spike, v));
        var small = Rule();
        Assert.All(Feed(small, 0.05, 0.04, 0.2, 0.01, 0.6, 0.03, 0.9), v => Assert.NotEqual(SpikeVerdict.Spike, v));   // 18 × the median, but < median + 1
        Assert.Equal(0, small.Streak);
    }

    [Fact]
    public void ASuddenBlowUpIsASpikeAndPatienceSpikesInARowDiverge()
    {
        var rule = Rule();
        rule.Seed(5.0);
        Assert.Equal([SpikeVerdict.Sane, SpikeVerdict.Sane, SpikeVerdict.Spike, SpikeVerdict.Spike, SpikeVerdict.Diverged],
                     Feed(rule, 5.1, 4.9, 1e13, 2e13, 7e12));
        Assert.Equal(3, rule.Streak);
        // bitwise: the values fed in, their median and 3 x median: exact in double
        Assert.Equal([1e13, 2e13, 7e12], rule.StreakValues);
        Assert.Equal(5.0, rule.Median);             // spikes never entered the window
        Assert.Equal(15.0, rule.Threshold);
    }

    [Fact]
    public void ASaneReportBetweenSpikesResetsTheStreak()
    {
        var rule = Rule();
        var verdicts = Feed(rule, 5, 5, 50, 50, 5, 50, 50, 5, 50);
        Assert.DoesNotContain(SpikeVerdict.Diverged, verdicts);
        Assert.Equal(1, rule.Streak);
        Assert.Equal([SpikeVerdict.Sane, SpikeVerdict.Diverged], Feed(Rule(patience: 1), 5, 50));
    }

    [Fact]
    public void AClimbingLossCannotWalkTheMedianUp()
    {
        // The logged losses of a real run (two pretrain stages, the second at lr 1, batch 2 × 16): each report less than
        // 3 × the running median, so without the admission bound the median would follow the climb and never fire.
        var rule = Rule();
        rule.Seed(5.28);
        Assert.Equal([SpikeVerdict.Elevated, SpikeVerdict.Spike, SpikeVerdict.Spike, SpikeVerdict.Diverged], Feed(rule, 9.64, 21.9, 45.3, 22.5));
        // bitwise: the seeded value is the median as given
        Assert.Equal(5.28, rule.Median);
        Tolerance.AssertClose(Math.Sqrt(3) * 5.28, rule.AdmissionBound, absolute: 1e-12);
    }

    [Fact]
    public void NonFiniteValuesAreSpikes()
    {
        var rule = Rule(patience: 2);
        rule.Seed(double.NaN);                       // a non-finite seed is ignored
        Assert.True(rule.NeedsBaseline);
        Assert.Equal([SpikeVerdict.Sane, SpikeVerdict.Spike, SpikeVerdict.Diverged], Feed(rule, 3.0, double.NaN, double.PositiveInfinity));
    }

    [Fact]
    public void TheWindowKeepsTheLastValuesAndTheMarginHandlesLossesNearZero()
    {
        var rule = Rule(window: 3);
        Feed(rule, 9, 8, 1, 2, 3);                   // window: 1, 2, 3
        // bitwise: the values fed in, their median and 3 x median: exact in double
        Assert.Equal([1.0, 2.0, 3.0], rule.History);
        Assert.Equal(2.0, rule.Median);
        Assert.Equal(6.0, rule.Threshold);           // max(3 × 2, 2 + 1)
        var rule2 = Rule(window: 4);
        Feed(rule2, 4.0, 4.2, 4.4, 4.6);
        Tolerance.AssertClose(4.3, rule2.Median, absolute: 1e-12);
        Assert.Equal(SpikeVerdict.Elevated, rule2.Observe(9.0));          // above max(√3 × 4.3, 4.3 + 0.5), below 3 × 4.3
        Tolerance.AssertClose(4.3, rule2.Median, absolute: 1e-12);                               // kept out of the window

        // A loss that can be negative (a surrogate): the additive margin rules, the ratio means nothing.
        var signed = Rule();
        Feed(signed, -0.1, -0.2, 0.0);
        Tolerance.AssertClose(-0.1, signed.Median, absolute: 1e-12);
        Tolerance.AssertClose(0.9, signed.Threshold, absolute: 1e-12);
        Assert.Equal(SpikeVerdict.Sane, signed.Observe(0.3));
        Assert.Equal(SpikeVerdict.Spike, signed.Observe(1.5));
    }

    [Fact]
    public void FactorZeroTurnsTheRuleOffAndBadSettingsAreRefused()
    {
        var off = Rule(factor: 0);
        Assert.False(off.Enabled);
        Assert.All(Feed(off, 1, 1e13, double.NaN, 1e20), v => Assert.Equal(SpikeVerdict.Sane, v));
        Assert.True(off.NeedsBaseline);              // no host reads are needed while off
        Assert.Throws<ArgumentOutOfRangeException>(() => Rule(factor: 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Rule(factor: double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => Rule(patience: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Rule(window: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopedLmTrainer(new TrainerOptions { SpikeFactor = 0.5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopedLmTrainer(new TrainerOptions { SpikePatience = 0 }));
    }

    [Fact]
    public void AResumedRuleJudgesLikeTheStraightOne()
    {
        var straight = Rule();
        Feed(straight, 6, 5, 4.5, 4.2);
        var resumed = new LossSpikeRule(3, 3, 20, straight.History);
        double[] next = [4.0, 13.0, 3.9, 20.0];
        Assert.Equal(Feed(straight, next), Feed(resumed, next));
    }
}
