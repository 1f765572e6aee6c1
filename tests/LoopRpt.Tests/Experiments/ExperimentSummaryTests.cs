using LoopRpt.Evaluation;
using LoopRpt.Experiments;

namespace LoopRpt.Tests.Experiments;

/// <summary>The aggregation math against values computed by hand (in the comments).</summary>
public sealed class ExperimentSummaryTests
{
    private const double Tol = 1e-9;

    [Fact]
    public void MeanAndSampleStandardDeviation()
    {
        var m = MeanStd.Of([0.1, 0.2, 0.6]);
        Tolerance.AssertClose(0.3, m.Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Sqrt(0.07), m.Std, absolute: Tol);                          // ((-0.2)² + (-0.1)² + 0.3²) / (3 - 1) = 0.07
        Assert.Equal(3, m.Count);
        Tolerance.AssertClose(4.303 * Math.Sqrt(0.07) / Math.Sqrt(3), m.HalfWidth95, absolute: Tol);
        Assert.True(double.IsNaN(MeanStd.Of([0.4]).Std));                  // one seed: no spread
        Tolerance.AssertClose(0.4, MeanStd.Of([0.4]).Mean, absolute: Tol);
        Assert.False(MeanStd.Of([]).IsDefined);
        Assert.False(MeanStd.Of([0.4, double.NaN]).IsDefined);              // a missing seed makes the statistic missing
        Assert.Equal("+5.00 ± 1.41", ExperimentSummary.Points(MeanStd.Of([0.06, 0.04]), signed: true));
        Assert.Equal("40.00", ExperimentSummary.Points(MeanStd.Of([0.4])));
        Assert.Equal("+0.00 ± 0.10", ExperimentSummary.Points(new MeanStd(-0.00001, 0.001, 2), signed: true));   // no "-0.00"
        Assert.Equal("-1.50 ± 0.10", ExperimentSummary.Points(new MeanStd(-0.015, 0.001, 2), signed: true));
    }

    [Fact]
    public void InterpolatesLinearlyInsideTheCurveOnlyAndAveragesTies()
    {
        (double, double)[] curve = [(4.0, 0.9), (1.5, 0.4), (2.5, 0.6)];      // unsorted on purpose
        Tolerance.AssertClose(0.5, ExperimentSummary.Interpolate(curve, 2.0), absolute: Tol);
        Tolerance.AssertClose(0.6 + 0.3 * (0.5 / 1.5), ExperimentSummary.Interpolate(curve, 3.0), absolute: Tol);
        Tolerance.AssertClose(0.9, ExperimentSummary.Interpolate(curve, 4.0), absolute: Tol);
        Tolerance.AssertClose(0.4, ExperimentSummary.Interpolate(curve, 1.5), absolute: Tol);
        Assert.True(double.IsNaN(ExperimentSummary.Interpolate(curve, 1.0)));   // below the curve: not covered
        Assert.True(double.IsNaN(ExperimentSummary.Interpolate(curve, 4.25)));  // above: not covered
        (double, double)[] ties = [(2, 0.4), (3, 0.8), (2, 0.6)];
        Tolerance.AssertClose(0.5, ExperimentSummary.Interpolate(ties, 2.0), absolute: Tol);
        Tolerance.AssertClose(0.65, ExperimentSummary.Interpolate(ties, 2.5), absolute: Tol);
        Assert.True(double.IsNaN(ExperimentSummary.Interpolate([], 2.0)));
    }

    [Fact]
    public void GridRunsFromOneToTAndAlwaysEndsAtT()
    {
        // bitwise: grid points are 1 + i·spacing rounded to 9 decimals in managed double arithmetic: exact points are the property under test
        Assert.Equal([1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0], ExperimentSummary.ExitStepGrid(4, 0.25));
        Assert.Equal([1.0, 1.4, 1.8, 2.2, 2.6, 3.0], ExperimentSummary.ExitStepGrid(3, 0.4));
        Assert.Equal([1.0, 1.75, 2.5, 3.0], ExperimentSummary.ExitStepGrid(3, 0.75));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExperimentSummary.ExitStepGrid(3, 0));
    }

    /// <summary>An evaluation with T = 2, q ∈ {0.5, 1}; every bucket gets the same numbers except Hard (scaled by 0.5).</summary>
    internal static LoopEvaluation Eval(string name, double s1, double s2, double q05Acc, double q05Exit, double q1Acc)
    {
        BucketEvaluation Bucket(string b, double min, double f) => new(b, min, 100, [f * s1, f * s2], [new QExitPoint(0.5, f * q05Acc, q05Exit), new QExitPoint(1.0, f * q1Acc, 2.0)]);
        return new LoopEvaluation(name, 2, [0.5, 1.0], true, [Bucket("All", 0, 1), Bucket("Easy", 0.5, 1), Bucket("Medium", 1.0, 1), Bucket("Hard", 1.5, 0.5)]);
    }

    private static ArmRun Run(string arm, int seed, LoopEvaluation e) => new(arm, seed, new Dictionary<string, LoopEvaluation> { ["heldout"] = e });

    private static IReadOnlyList<ArmRun> Runs() =>
    [
        Run("base", 0, Eval("base", 0.28, 0.49, 0.39, 1.5, 0.49)),
        Run("ctrl", 1, Eval("c1", 0.30, 0.50, 0.40, 1.50, 0.50)),
        Run("ctrl", 2, Eval("c2", 0.34, 0.52, 0.44, 1.25, 0.52)),
        Run("arm", 1, Eval("a1", 0.36, 0.51, 0.45, 1.50, 0.51)),
        Run("arm", 2, Eval("a2", 0.38, 0.55, 0.47, 1.75, 0.55)),        // its curve starts at 1.75: 1.0..1.5 not covered
    ];

    [Fact]
    public void ArmStatisticsOverSeedsIncludingMatchedExitSteps()
    {
        var s = ExperimentSummary.Create(Runs(), ["ctrl"], gridSpacing: 0.25);
        // bitwise: grid points are 1 + i·spacing rounded to 9 decimals in managed double arithmetic: exact points are the property under test
        Assert.Equal([1.0, 1.25, 1.5, 1.75, 2.0], s.Grid);
        Assert.Equal(["base", "ctrl", "arm"], s.Arms);

        var arm = s.Get("heldout", "arm", "All");
        Assert.Equal([1, 2], arm.Seeds);
        Tolerance.AssertClose(0.37, arm.StepAccuracy[0].Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Sqrt(2) * 0.01, arm.StepAccuracy[0].Std, absolute: Tol);
        Tolerance.AssertClose(0.46, arm.QExit[0].Accuracy.Mean, absolute: Tol);
        Tolerance.AssertClose(1.625, arm.QExit[0].MeanExitStep.Mean, absolute: Tol);
        // Seed 1 along (1.5, 0.45)-(2, 0.51): 0.48 at 1.75; seed 2 along (1.75, 0.47)-(2, 0.55): 0.47 at 1.75.
        Assert.False(arm.MatchedAccuracy[2].IsDefined);                    // 1.5: seed 2 does not reach it
        Tolerance.AssertClose(0.475, arm.MatchedAccuracy[3].Mean, absolute: Tol);
        Tolerance.AssertClose(0.53, arm.MatchedAccuracy[4].Mean, absolute: Tol);

        var ctrl = s.Get("heldout", "ctrl", "All");
        Assert.False(ctrl.MatchedAccuracy[1].IsDefined);                   // 1.25: seed 1's curve starts at 1.5
        // Seed 2 along (1.25, 0.44)-(2, 0.52): 0.44 + 0.08 / 3 at 1.5; seed 1: 0.40.
        Tolerance.AssertClose((0.40 + 0.44 + 0.08 / 3) / 2, ctrl.MatchedAccuracy[2].Mean, absolute: Tol);

        var hard = s.Get("heldout", "arm", "Hard");
        Tolerance.AssertClose(0.185, hard.StepAccuracy[0].Mean, absolute: Tol);
        Assert.Equal(100, hard.Tokens);

        var b = s.Get("heldout", "base", "All");
        Assert.Equal(1, b.StepAccuracy[0].Count);
        Assert.True(double.IsNaN(b.StepAccuracy[0].Std));
    }

    [Fact]
    public void PairedDifferencesBySeed()
    {
        var s = ExperimentSummary.Create(Runs(), ["ctrl"], gridSpacing: 0.25);
        var d = s.Difference("heldout", "arm", "ctrl", "All")!;
        Assert.Null(s.Difference("heldout", "base", "ctrl", "All"));     // the base comes before the control
        Assert.Null(s.Difference("heldout", "ctrl", "arm", "All"));
        Assert.Equal(4, s.Differences.Count);                              // one pair × four buckets

        // s1: seed 1 0.36 − 0.30 = 0.06, seed 2 0.38 − 0.34 = 0.04.
        Tolerance.AssertClose(0.05, d.StepAccuracy[0].Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Sqrt(2) * 0.01, d.StepAccuracy[0].Std, absolute: Tol);
        // q = 0.5: accuracy 0.05 and 0.03; mean exit step 0 and +0.5.
        Tolerance.AssertClose(0.04, d.QExit[0].Accuracy.Mean, absolute: Tol);
        Tolerance.AssertClose(0.25, d.QExit[0].MeanExitStep.Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Sqrt(0.125), d.QExit[0].MeanExitStep.Std, absolute: Tol);
        // Matched at 1.75: seed 1 0.48 − 0.45 = 0.03; seed 2 0.47 − (0.44 + 0.08 · 2/3) = −0.07/3.
        double s1At175 = 0.03, s2At175 = 0.47 - (0.44 + 0.08 * 2 / 3);
        Tolerance.AssertClose((s1At175 + s2At175) / 2, d.MatchedAccuracy[3].Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Abs(s1At175 - s2At175) / Math.Sqrt(2), d.MatchedAccuracy[3].Std, absolute: Tol);
        // Matched at 2.0: 0.01 and 0.03.
        Tolerance.AssertClose(0.02, d.MatchedAccuracy[4].Mean, absolute: Tol);
        // Not covered by the arm's seed 2 or the control's seed 1: no difference there.
        Assert.False(d.MatchedAccuracy[0].IsDefined);
        Assert.False(d.MatchedAccuracy[2].IsDefined);
        // Mean over the common points {1.75, 2.0}, per seed, then over seeds.
        double m1 = (s1At175 + 0.01) / 2, m2 = (s2At175 + 0.03) / 2;
        Tolerance.AssertClose((m1 + m2) / 2, d.MatchedMean.Mean, absolute: Tol);
        Tolerance.AssertClose(Math.Abs(m1 - m2) / Math.Sqrt(2), d.MatchedMean.Std, absolute: Tol);
    }

    [Fact]
    public void FixedStepsCanExtendTheCurves()
    {
        var s = ExperimentSummary.Create(Runs(), ["ctrl"], gridSpacing: 0.25, includeFixedSteps: true);
        var arm = s.Get("heldout", "arm", "All");
        // Seed 2 now starts at s1 = (1, 0.38): at 1.25, 0.38 + (0.47 − 0.38) / 3; seed 1 from (1, 0.36) to (1.5, 0.45): 0.405.
        Tolerance.AssertClose((0.38 + 0.09 / 3 + 0.405) / 2, arm.MatchedAccuracy[1].Mean, absolute: Tol);
        // At 2.0 the q = 1 point and s2 coincide (same value): averaged, unchanged.
        Tolerance.AssertClose(0.53, arm.MatchedAccuracy[4].Mean, absolute: Tol);
        Tolerance.AssertClose(0.37, arm.MatchedAccuracy[0].Mean, absolute: Tol);
    }

    [Fact]
    public void MismatchedRunsAreRefused()
    {
        var runs = Runs().ToList();
        runs.Add(new ArmRun("arm", 3, new Dictionary<string, LoopEvaluation> { ["other"] = Eval("x", 0.3, 0.5, 0.4, 1.5, 0.5) }));
        var e = Assert.Throws<ArgumentException>(() => ExperimentSummary.Create(runs, ["ctrl"]));
        Assert.Contains("evaluated on", e.Message);
        Assert.Throws<ArgumentException>(() => ExperimentSummary.Create([.. Runs(), Runs()[1]], ["ctrl"]));
    }

    [Fact]
    public void VerdictsFollowTheTestAndHolmDecides()
    {
        var unclear = ExperimentReport.Verdict("heldout", "looprpt", "stage1-equal-steps", "s1, Hard", new MeanStd(0.004, 0.003, 3));
        Assert.Equal("no clear difference", unclear.Outcome);
        Assert.Contains("looprpt − stage1-equal-steps at s1, Hard (heldout): +0.40 ± 0.30 points (3 seeds; 95 % CI -0.35 to +1.15; p = 0.", unclear.Text);
        // t = 0.02 / (0.003 / √3) = 11.55 on 2 df: p = 0.0074, so "higher" alone; in a family whose Holm-adjusted p is 0.2, not.
        var alone = ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(0.02, 0.003, 3));
        Tolerance.AssertClose(0.0074, alone.PValue, "p", absolute: 2e-4);
        var adjusted = ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(0.02, 0.003, 3), adjustedP: 0.2);
        Assert.Equal("no clear difference", adjusted.Outcome);
        Assert.Contains("Holm p = 0.200; unadjusted, the interval excludes 0", adjusted.Text);
        Assert.Equal("higher", ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(0.02, 0.003, 3)).Outcome);
        Assert.Equal("lower", ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(-0.02, 0.003, 3)).Outcome);
        Assert.Equal("undetermined", ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(0.02, double.NaN, 1)).Outcome);
        Assert.Equal("undetermined", ExperimentReport.Verdict("h", "a", "c", "s1, All", new MeanStd(double.NaN, double.NaN, 3)).Outcome);
    }
}

public sealed class ParetoBandPlotTests
{
    [Fact]
    public void DrawsABandWhereThereIsASpreadAndSkipsMissingPoints()
    {
        BandPoint[] withSpread = [new(1.0, double.NaN, double.NaN), new(1.5, 0.40, 0.02), new(2.0, 0.45, 0.01), new(3.0, 0.50, 0.03)];
        BandPoint[] single = [new(1.5, 0.38, double.NaN), new(2.0, 0.43, double.NaN)];
        BandPoint[] steps = [new(1, 0.30, 0.01), new(2, 0.40, 0.02), new(3, 0.50, double.NaN)];
        var panels = new[]
        {
            new BandPanel("All <tokens>", [new BandSeries("looprpt", withSpread, steps), new BandSeries("base", single)]),
            new BandPanel("Hard", [new BandSeries("looprpt", [new BandPoint(2, double.NaN, double.NaN)])]),
        };
        var svg = System.Xml.Linq.XDocument.Parse(ParetoBandPlot.ToSvg(panels, "bands & seeds", steps: 3));
        System.Xml.Linq.XNamespace ns = "http://www.w3.org/2000/svg";
        var polygons = svg.Descendants(ns + "polygon").ToList();
        Assert.Single(polygons);                                          // only the series with a spread gets a band
        Assert.Equal(6, polygons[0].Attribute("points")!.Value.Split(' ').Length);   // 3 upper + 3 lower corners
        Assert.Equal(5, svg.Descendants(ns + "circle").Count());           // 3 + 2 finite curve points
        Assert.Equal(2, svg.Descendants(ns + "line").Count(l => l.Attribute("opacity")?.Value == "0.7"));   // whiskers at s1, s2
        Assert.Contains(svg.Descendants(ns + "text"), t => t.Value == "no data");
        Assert.Contains(svg.Descendants(ns + "text"), t => t.Value == "All <tokens>");
        Assert.Throws<ArgumentException>(() => ParetoBandPlot.ToSvg([], "x", 3));
    }
}
