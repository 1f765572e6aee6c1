using System.Globalization;
using LoopRpt.Evaluation;

namespace LoopRpt.Experiments;

/// <summary>
/// Mean and sample standard deviation (n − 1) of <see cref="Count"/> values, e.g. one per seed. A NaN value (a bucket
/// without tokens, a curve that does not reach a grid point) makes the mean NaN: a statistic is only given where every
/// seed has a value. The standard deviation is NaN for fewer than two values.
/// </summary>
/// <param name="Mean">The mean.</param>
/// <param name="Std">The sample standard deviation (n − 1 in the denominator).</param>
/// <param name="Count">How many values (seeds).</param>
public readonly record struct MeanStd(double Mean, double Std, int Count)
{
    /// <summary>The statistic of <paramref name="values"/>.</summary>
    public static MeanStd Of(IEnumerable<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var v = values.ToArray();
        if (v.Length == 0) return new MeanStd(double.NaN, double.NaN, 0);
        double mean = v.Average();
        double std = v.Length < 2 ? double.NaN : Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1));
        return new MeanStd(mean, std, v.Length);
    }

    /// <summary>True when the mean is a number.</summary>
    public bool IsDefined => double.IsFinite(Mean);

    /// <summary>
    /// Half-width of the 95 % confidence interval of the mean, t(0.975, n − 1) · std / √n (Student's t, since seeds are
    /// few); NaN for fewer than two values.
    /// </summary>
    public double HalfWidth95 => Count < 2 || !double.IsFinite(Std) ? double.NaN : StudentT975(Count - 1) * Std / Math.Sqrt(Count);

    /// <summary>This statistic scaled by <paramref name="factor"/> (e.g. 100 for percentage points).</summary>
    public MeanStd Scale(double factor) => new(Mean * factor, Std * factor, Count);

    /// <summary>The 0.975 quantile of Student's t with <paramref name="df"/> degrees of freedom (table to 30, then 1.96).</summary>
    public static double StudentT975(int df) => df < 1 ? double.NaN : df <= T975.Length ? T975[df - 1] : 1.96;

    private static readonly double[] T975 =
    [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
}

/// <summary>One trained arm/seed (or the base model, seed 0) and its evaluation on each evaluation set.</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Seed">Seed (0 for the base model).</param>
/// <param name="Evaluations">Evaluation set name → the run's evaluation, buckets by the base model.</param>
public sealed record ArmRun(string Arm, int Seed, IReadOnlyDictionary<string, LoopEvaluation> Evaluations);

/// <summary>Q-exit at one threshold: accuracy and mean exit step over seeds (or their paired differences).</summary>
/// <param name="Q">The threshold.</param>
/// <param name="Accuracy">Accuracy (fraction).</param>
/// <param name="MeanExitStep">Mean exit step (1-indexed loop steps).</param>
public sealed record QExitStatistics(double Q, MeanStd Accuracy, MeanStd MeanExitStep);

/// <summary>One arm on one evaluation set and bucket, over its seeds.</summary>
/// <param name="EvaluationSet">Evaluation set.</param>
/// <param name="Arm">Arm name.</param>
/// <param name="Bucket">All, Easy, Medium or Hard.</param>
/// <param name="Tokens">Tokens in the bucket (the same for every arm: buckets come from the base model).</param>
/// <param name="Seeds">The seeds summarized.</param>
/// <param name="StepAccuracy">Accuracy at s1..sT.</param>
/// <param name="QExit">Q-exit accuracy and mean exit step, one per q.</param>
/// <param name="MatchedAccuracy">Accuracy at the mean exit steps of <see cref="ExperimentSummary.Grid"/>, interpolated per seed along its curve; NaN where a seed's curve does not reach the point.</param>
public sealed record ArmStatistics(string EvaluationSet, string Arm, string Bucket, long Tokens, IReadOnlyList<int> Seeds,
                                   IReadOnlyList<MeanStd> StepAccuracy, IReadOnlyList<QExitStatistics> QExit, IReadOnlyList<MeanStd> MatchedAccuracy);

/// <summary><see cref="Arm"/> − <see cref="Control"/>, computed per seed (the two runs of a seed saw the same batches) and then summarized.</summary>
/// <param name="EvaluationSet">Evaluation set.</param>
/// <param name="Arm">The arm.</param>
/// <param name="Control">The control subtracted.</param>
/// <param name="Bucket">All, Easy, Medium or Hard.</param>
/// <param name="Seeds">The seeds both have.</param>
/// <param name="StepAccuracy">Accuracy differences at s1..sT.</param>
/// <param name="QExit">Differences of Q-exit accuracy and of mean exit step at each q.</param>
/// <param name="MatchedAccuracy">Accuracy differences at the grid's matched mean exit steps (NaN where either curve of some seed does not reach the point).</param>
/// <param name="MatchedMean">Per seed, the mean difference over the grid points every seed covers; then over seeds (NaN when there is no such point).</param>
public sealed record PairedDifference(string EvaluationSet, string Arm, string Control, string Bucket, IReadOnlyList<int> Seeds,
                                      IReadOnlyList<MeanStd> StepAccuracy, IReadOnlyList<QExitStatistics> QExit, IReadOnlyList<MeanStd> MatchedAccuracy, MeanStd MatchedMean);

/// <summary>
/// The multi-seed aggregation of an experiment (docs/method.md §5): per arm, evaluation set and bucket, mean ± sample
/// standard deviation over seeds of accuracy at s1..sT, of Q-exit accuracy and mean exit step per q, and of the Pareto
/// curve compared at matched mean exit steps; and every arm's paired differences against each control.
/// <para>Matched exit steps: for each seed the curve's points (Q-exit sweep, optionally with the fixed steps) are sorted by
/// mean exit step (points at the same mean exit step are averaged) and accuracy is interpolated linearly at each grid
/// point 1, 1 + Δ, ..., T; outside the curve's range it is undefined (no extrapolation), so a statistic is reported only
/// where every seed's curve reaches the point.</para>
/// <para>Accuracies are fractions in [0, 1]; the report prints percentage points.</para>
/// </summary>
public sealed class ExperimentSummary
{
    private readonly Dictionary<(string, string, string), ArmStatistics> _stats;
    private readonly Dictionary<(string, string, string, string), PairedDifference> _diffs;

    private ExperimentSummary(IReadOnlyList<string> sets, IReadOnlyList<string> arms, IReadOnlyList<string> controls, int steps, IReadOnlyList<double> qValues,
                              IReadOnlyList<double> grid, List<ArmStatistics> stats, List<PairedDifference> diffs)
    {
        EvaluationSets = sets;
        Arms = arms;
        Controls = controls;
        Steps = steps;
        QValues = qValues;
        Grid = grid;
        Statistics = stats;
        Differences = diffs;
        _stats = stats.ToDictionary(s => (s.EvaluationSet, s.Arm, s.Bucket));
        _diffs = diffs.ToDictionary(d => (d.EvaluationSet, d.Arm, d.Control, d.Bucket));
    }

    /// <summary>Evaluation set names, in input order.</summary>
    public IReadOnlyList<string> EvaluationSets { get; }

    /// <summary>Arm names in order of first appearance in the runs.</summary>
    public IReadOnlyList<string> Arms { get; }

    /// <summary>The arms every later arm is compared with.</summary>
    public IReadOnlyList<string> Controls { get; }

    /// <summary>Loop steps T.</summary>
    public int Steps { get; }

    /// <summary>Q-exit thresholds.</summary>
    public IReadOnlyList<double> QValues { get; }

    /// <summary>Mean exit steps at which curves are compared: 1, 1 + Δ, ..., up to T.</summary>
    public IReadOnlyList<double> Grid { get; }

    /// <summary>Every (evaluation set, arm, bucket).</summary>
    public IReadOnlyList<ArmStatistics> Statistics { get; }

    /// <summary>Every (evaluation set, arm, control, bucket) with the arm after the control in <see cref="Arms"/>.</summary>
    public IReadOnlyList<PairedDifference> Differences { get; }

    /// <summary>The statistics of one arm.</summary>
    public ArmStatistics Get(string evaluationSet, string arm, string bucket)
        => _stats.TryGetValue((evaluationSet, arm, bucket), out var s) ? s
            : throw new ArgumentException($"No statistics for evaluation set '{evaluationSet}', arm '{arm}', bucket '{bucket}'.");

    /// <summary>The paired difference arm − control, or null when not computed (the arm is not after the control).</summary>
    public PairedDifference? Difference(string evaluationSet, string arm, string control, string bucket)
        => _diffs.GetValueOrDefault((evaluationSet, arm, control, bucket));

    /// <summary>
    /// Aggregates <paramref name="runs"/>. Each arm after a control in the runs' order is compared with it, paired by seed.
    /// </summary>
    /// <param name="runs">Every arm/seed (the base model as one run is fine), all evaluated on the same sets with the same loop count and q values.</param>
    /// <param name="controls">Arms to compare the others with (e.g. the equal-steps and equal-compute controls); absent names are skipped.</param>
    /// <param name="gridSpacing">Δ of the matched-exit grid.</param>
    /// <param name="includeFixedSteps">Put the fixed-step points s1..sT on each curve too.</param>
    public static ExperimentSummary Create(IReadOnlyList<ArmRun> runs, IReadOnlyList<string> controls, double gridSpacing = ExperimentOptions.Defaults.ParetoGridStep,
                                           bool includeFixedSteps = ExperimentOptions.Defaults.ParetoIncludesFixedSteps)
    {
        ArgumentNullException.ThrowIfNull(runs);
        ArgumentNullException.ThrowIfNull(controls);
        if (runs.Count == 0) throw new ArgumentException("Nothing to summarize: no runs.", nameof(runs));
        var first = runs[0].Evaluations.Values.FirstOrDefault() ?? throw new ArgumentException($"Run '{runs[0].Arm}' seed {runs[0].Seed} has no evaluation.", nameof(runs));
        var sets = runs[0].Evaluations.Keys.ToArray();
        int T = first.Steps;
        var qs = first.QValues;
        foreach (var r in runs)
        {
            if (!r.Evaluations.Keys.ToHashSet().SetEquals(sets))
                throw new ArgumentException($"Run '{r.Arm}' seed {r.Seed} was evaluated on [{string.Join(", ", r.Evaluations.Keys)}], others on [{string.Join(", ", sets)}].", nameof(runs));
            if (r.Evaluations.Values.Any(e => e.Steps != T || !e.QValues.SequenceEqual(qs)))
                throw new ArgumentException($"Run '{r.Arm}' seed {r.Seed} has a different loop count or q sweep from the others.", nameof(runs));
        }
        var dup = runs.GroupBy(r => (r.Arm, r.Seed)).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"Arm '{dup.Key.Arm}' seed {dup.Key.Seed} appears twice.", nameof(runs));

        var grid = ExitStepGrid(T, gridSpacing);
        var arms = runs.Select(r => r.Arm).Distinct().ToArray();
        var byArm = arms.ToDictionary(a => a, a => runs.Where(r => r.Arm == a).OrderBy(r => r.Seed).ToArray());
        var stats = new List<ArmStatistics>();
        var diffs = new List<PairedDifference>();
        var presentControls = controls.Where(byArm.ContainsKey).ToArray();
        foreach (var set in sets)
            foreach (var bucket in LoopEvaluator.BucketNames)
            {
                foreach (var arm in arms)
                {
                    var bs = byArm[arm].Select(r => r.Evaluations[set][bucket]).ToArray();
                    var curves = bs.Select(b => Matched(b, grid, includeFixedSteps)).ToArray();
                    stats.Add(new ArmStatistics(set, arm, bucket, bs[0].Tokens, byArm[arm].Select(r => r.Seed).ToArray(),
                        Enumerable.Range(0, T).Select(t => MeanStd.Of(bs.Select(b => b.StepAccuracy[t]))).ToArray(),
                        Enumerable.Range(0, qs.Count).Select(j => new QExitStatistics(qs[j], MeanStd.Of(bs.Select(b => b.QExit[j].Accuracy)), MeanStd.Of(bs.Select(b => b.QExit[j].MeanExitStep)))).ToArray(),
                        Enumerable.Range(0, grid.Count).Select(g => MeanStd.Of(curves.Select(c => c[g]))).ToArray()));
                }
                foreach (var control in presentControls)
                    foreach (var arm in arms.SkipWhile(a => a != control).Skip(1))
                        if (Pair(set, bucket, arm, control, byArm[arm], byArm[control], grid, includeFixedSteps) is { } d) diffs.Add(d);
            }
        return new ExperimentSummary(sets, arms, presentControls, T, qs, grid, stats, diffs);
    }

    private static PairedDifference? Pair(string set, string bucket, string arm, string control, ArmRun[] a, ArmRun[] c, IReadOnlyList<double> grid, bool includeFixedSteps)
    {
        var seeds = a.Select(r => r.Seed).Intersect(c.Select(r => r.Seed)).Order().ToArray();
        if (seeds.Length == 0) return null;                                // e.g. the base model (seed 0) against a trained control
        var pa = seeds.Select(s => a.Single(r => r.Seed == s).Evaluations[set][bucket]).ToArray();
        var pc = seeds.Select(s => c.Single(r => r.Seed == s).Evaluations[set][bucket]).ToArray();
        int T = pa[0].StepAccuracy.Count, Q = pa[0].QExit.Count;
        var matched = seeds.Select((_, i) =>
        {
            var ma = Matched(pa[i], grid, includeFixedSteps);
            var mc = Matched(pc[i], grid, includeFixedSteps);
            return ma.Select((v, g) => v - mc[g]).ToArray();
        }).ToArray();
        var common = Enumerable.Range(0, grid.Count).Where(g => matched.All(m => double.IsFinite(m[g]))).ToArray();
        var matchedMean = common.Length == 0 ? new MeanStd(double.NaN, double.NaN, seeds.Length) : MeanStd.Of(matched.Select(m => common.Average(g => m[g])));
        return new PairedDifference(set, arm, control, bucket, seeds,
            Enumerable.Range(0, T).Select(t => MeanStd.Of(seeds.Select((_, i) => pa[i].StepAccuracy[t] - pc[i].StepAccuracy[t]))).ToArray(),
            Enumerable.Range(0, Q).Select(j => new QExitStatistics(pa[0].QExit[j].Q,
                MeanStd.Of(seeds.Select((_, i) => pa[i].QExit[j].Accuracy - pc[i].QExit[j].Accuracy)),
                MeanStd.Of(seeds.Select((_, i) => pa[i].QExit[j].MeanExitStep - pc[i].QExit[j].MeanExitStep)))).ToArray(),
            Enumerable.Range(0, grid.Count).Select(g => MeanStd.Of(matched.Select(m => m[g]))).ToArray(),
            matchedMean);
    }

    /// <summary>The mean exit steps 1, 1 + <paramref name="spacing"/>, ... up to <paramref name="steps"/> (T is always included).</summary>
    public static IReadOnlyList<double> ExitStepGrid(int steps, double spacing)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "The loop count must be at least 1.");
        if (!(spacing > 0) || double.IsInfinity(spacing)) throw new ArgumentOutOfRangeException(nameof(spacing), spacing, "The grid spacing must be positive.");
        var grid = new List<double>();
        for (int i = 0; ; i++)
        {
            double x = 1 + i * spacing;                                     // multiply, not accumulate: no drift
            if (x > steps + 1e-9) break;
            grid.Add(Math.Round(x, 9));
        }
        if (Math.Abs(grid[^1] - steps) > 1e-9) grid.Add(steps);
        return grid;
    }

    /// <summary>One evaluation's curve as (mean exit step, accuracy) points: the Q-exit sweep, plus s1..sT when asked; non-finite points dropped.</summary>
    public static IReadOnlyList<(double MeanExitStep, double Accuracy)> Curve(BucketEvaluation bucket, bool includeFixedSteps)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        var pts = bucket.QExit.Select(p => (p.MeanExitStep, p.Accuracy));
        if (includeFixedSteps) pts = pts.Concat(bucket.StepAccuracy.Select((a, t) => ((double)(t + 1), a)));
        return pts.Where(p => double.IsFinite(p.Item1) && double.IsFinite(p.Item2)).ToArray();
    }

    /// <summary>
    /// Accuracy at mean exit step <paramref name="exitStep"/> by linear interpolation along <paramref name="curve"/> (sorted by
    /// mean exit step; points at the same step averaged). NaN outside the curve's range: no extrapolation.
    /// </summary>
    public static double Interpolate(IEnumerable<(double MeanExitStep, double Accuracy)> curve, double exitStep)
    {
        ArgumentNullException.ThrowIfNull(curve);
        const double eps = 1e-9;
        var pts = curve.OrderBy(p => p.MeanExitStep).ToList();
        var merged = new List<(double X, double Y)>();
        for (int i = 0; i < pts.Count;)
        {
            int j = i;
            while (j < pts.Count && pts[j].MeanExitStep - pts[i].MeanExitStep <= eps) j++;
            merged.Add((pts[i].MeanExitStep, pts.Skip(i).Take(j - i).Average(p => p.Accuracy)));
            i = j;
        }
        if (merged.Count == 0 || exitStep < merged[0].X - eps || exitStep > merged[^1].X + eps) return double.NaN;
        for (int i = 0; i < merged.Count; i++)
        {
            if (Math.Abs(merged[i].X - exitStep) <= eps) return merged[i].Y;
            if (i + 1 < merged.Count && exitStep < merged[i + 1].X)
            {
                var (x0, y0) = merged[i];
                var (x1, y1) = merged[i + 1];
                return y0 + (y1 - y0) * (exitStep - x0) / (x1 - x0);
            }
        }
        return double.NaN;
    }

    private static double[] Matched(BucketEvaluation b, IReadOnlyList<double> grid, bool includeFixedSteps)
    {
        var curve = Curve(b, includeFixedSteps);
        return grid.Select(x => Interpolate(curve, x)).ToArray();
    }

    /// <summary>"+0.40 ± 0.30" in percentage points (fractions × 100); "–" when undefined; the mean alone for a single value.</summary>
    public static string Points(MeanStd m, int decimals = 2, bool signed = false)
    {
        if (!m.IsDefined) return "–";
        var mean = Format(100 * m.Mean, decimals, signed);
        return m.Count < 2 ? mean : mean + " ± " + Format(100 * m.Std, decimals, signed: false);
    }

    /// <summary>
    /// <paramref name="value"/> with <paramref name="decimals"/> decimals, a '+' before positive values when
    /// <paramref name="signed"/>, and no "-0.00" for a small negative value that rounds to zero.
    /// </summary>
    internal static string Format(double value, int decimals, bool signed)
    {
        double v = Math.Round(value, decimals, MidpointRounding.AwayFromZero);
        if (v == 0) v = 0;                                                 // drops the sign of a negative zero
        var text = v.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        return signed && v >= 0 ? "+" + text : text;
    }
}
