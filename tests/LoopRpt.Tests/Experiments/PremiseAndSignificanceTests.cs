using LoopRpt.Evaluation;
using LoopRpt.Experiments;

namespace LoopRpt.Tests.Experiments;

/// <summary>Holm's correction, the t and normal tails, and the premise check on constructed per-loop tables.</summary>
public sealed class PremiseAndSignificanceTests
{
    [Fact]
    public void HolmMatchesAHandComputedExample()
    {
        // Sorted: 0.005 (×4 = 0.02), 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1 = 0.04 → running max 0.06).
        var adjusted = Significance.Holm([0.01, 0.04, 0.03, 0.005, double.NaN]);
        double[] expected = [0.03, 0.06, 0.06, 0.02];
        for (int i = 0; i < 4; i++) Tolerance.AssertClose(expected[i], adjusted[i], $"p[{i}]", absolute: 1e-12);
        Assert.True(double.IsNaN(adjusted[4]));
        Tolerance.AssertClose(1, Significance.Holm([0.5, 0.6])[1], "capped at 1", absolute: 1e-12);
    }

    [Fact]
    public void TailsMatchTables()
    {
        // t(0.975) quantiles of the table MeanStd uses: two-sided tail 0.05 (the table rounds to 3 decimals).
        Tolerance.AssertClose(0.05, Significance.StudentTTwoSidedTail(12.706, 1), "df 1", absolute: 1e-4);
        Tolerance.AssertClose(0.05, Significance.StudentTTwoSidedTail(2.776, 4), "df 4", absolute: 1e-4);
        Tolerance.AssertClose(0.05, Significance.StudentTTwoSidedTail(2.042, 30), "df 30", absolute: 1e-4);
        Tolerance.AssertClose(0.025, Significance.NormalUpperTail(1.959964), "z", absolute: 1e-6);
        Tolerance.AssertClose(0.5, Significance.NormalUpperTail(0), "z = 0", absolute: 1e-7);
        // A paired mean with t = mean / (std / √n) = 2.776 on 5 values.
        Tolerance.AssertClose(0.05, Significance.TwoSidedP(new MeanStd(2.776, Math.Sqrt(5), 5)), "t-test", absolute: 1e-4);
        Tolerance.AssertClose(0.025, Significance.GreaterP(new MeanStd(2.776, Math.Sqrt(5), 5)), "one-sided", absolute: 1e-4);
        Assert.True(double.IsNaN(Significance.TwoSidedP(new MeanStd(1, double.NaN, 1))));
    }

    private static BucketEvaluation Bucket(long tokens, params double[] accuracy)
        => new("All", 0, tokens, accuracy, []) { StepNegativeLogLikelihood = accuracy.Select(a => 3 - a).ToArray() };

    [Fact]
    public void PremiseHoldsWhenLaterLoopsBeatLoopOneOverTheBases()
    {
        var check = PremiseCheck.Assess("heldout", [Bucket(1000, 0.30, 0.40, 0.41), Bucket(1000, 0.31, 0.42, 0.40), Bucket(1000, 0.29, 0.41, 0.42)]);
        Assert.True(check.Holds);
        Assert.Equal(3, check.Bases);
        Assert.Equal([2, 3], check.Gains.Select(g => g.Step));
        Tolerance.AssertClose(0.11, check.Gains[0].Gain.Mean, "s2 − s1: (0.10 + 0.11 + 0.12) / 3", absolute: 1e-12);
        Tolerance.AssertClose(0.01, check.Gains[0].Gain.Std, "sample std of 0.10, 0.11, 0.12", absolute: 1e-12);
        // t = 0.11 / (0.01 / √3) = 19.05 on 2 df: one-sided p = 0.00137; Holm over 2 loops doubles the smaller p.
        Tolerance.AssertClose(0.001372, check.Gains[0].PValue, "p", absolute: 2e-5);
        Tolerance.AssertClose(2 * check.Gains[0].PValue, check.Gains[0].AdjustedPValue, "Holm", absolute: 1e-12);
        Tolerance.AssertClose(2.59, check.NegativeLogLikelihood[1].Mean, "NLL of s2: 3 − 0.41", absolute: 1e-12);
        Assert.Contains("holds: s2, s3 beat s1", PremiseCheck.Markdown([check]));
    }

    [Fact]
    public void PremiseFailsWhenLoopsHurtOrTheGainIsWithinTheNoise()
    {
        // The text run: 6.10 % at loop 1 → 5.86 % at loop 4, three bases.
        var hurting = PremiseCheck.Assess("heldout", [Bucket(16384, 0.0610, 0.0605, 0.0600, 0.0586), Bucket(16384, 0.0612, 0.0603, 0.0601, 0.0590), Bucket(16384, 0.0608, 0.0609, 0.0599, 0.0585)]);
        Assert.False(hurting.Holds);
        Assert.All(hurting.Gains, g => Assert.True(g.AdjustedPValue > 0.5));
        // Two bases whose gains disagree: the mean is positive but within the seed noise.
        Assert.False(PremiseCheck.Assess("x", [Bucket(1000, 0.30, 0.35), Bucket(1000, 0.30, 0.29)]).Holds);
    }

    [Fact]
    public void OneBaseIsTestedOverTheHeldOutTokens()
    {
        // se = √((0.25 + 0.52·0.48) / 10,000) = 0.0070682; z = 0.02 / se = 2.8296 → p = 0.002330; Holm over 2 loops.
        var gain = PremiseCheck.Assess("x", [Bucket(10_000, 0.50, 0.52, 0.50)]);
        Assert.True(gain.Holds);
        Tolerance.AssertClose(0.002330, gain.Gains[0].PValue, "z-test", absolute: 2e-6);
        Tolerance.AssertClose(2 * 0.002330, gain.Gains[0].AdjustedPValue, "Holm", absolute: 4e-6);
        Assert.False(PremiseCheck.Assess("x", [Bucket(10_000, 0.50, 0.505, 0.50)]).Holds);     // z = 0.71
        Assert.Contains("one base gives no seed noise", PremiseCheck.Markdown([gain]));
        Assert.Throws<ArgumentException>(() => PremiseCheck.Assess("x", []));
    }
}
