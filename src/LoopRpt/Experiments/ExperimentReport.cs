using System.Globalization;
using System.Text;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;

namespace LoopRpt.Experiments;

/// <summary>Writes an experiment's report.md, results.csv and band plots, and states the verdicts from the numbers.</summary>
internal sealed class ExperimentReport(ExperimentOptions options, IReadOnlyList<ExperimentArm> arms, OuroConfig config, IReadOnlyList<string> baseDirectories,
                                       ExperimentSummary summary, IReadOnlyList<ArmRun> runs, CostMeasurement cost,
                                       IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> sets, IReadOnlyList<PremiseCheck> premise,
                                       IReadOnlyList<ArmTiming> timings, IReadOnlyList<BaseBudget> budgets)
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private static readonly string[] Shown = ["All", "Hard"];

    /// <summary>
    /// The claims, per evaluation set, LoopRPT arm and its controls (equal steps, and its own equal-compute control):
    /// accuracy at s1 (Hard, All), at the last step (All), and the mean difference at matched mean exit steps (All, Hard).
    /// Each gets a two-sided paired t-test; the p-values of the whole list are Holm-adjusted, and "higher"/"lower" needs an
    /// adjusted p below 0.05.
    /// </summary>
    public IReadOnlyList<ExperimentVerdict> Verdicts()
    {
        var claims = new List<(string Set, string Arm, string Control, string Where, MeanStd Value)>();
        int T = summary.Steps;
        foreach (var set in summary.EvaluationSets)
            foreach (var arm in arms.Where(a => !a.IsControl))
                foreach (var control in ControlsOf(arm.Name))
                {
                    PairedDifference? D(string bucket) => summary.Difference(set, arm.Name, control, bucket);
                    var list = new (string Where, MeanStd? Value)[]
                    {
                        ("s1, Hard", D("Hard")?.StepAccuracy[0]),
                        ("s1, All", D("All")?.StepAccuracy[0]),
                        ($"s{T}, All", D("All")?.StepAccuracy[T - 1]),
                        ("matched mean exit steps, All", D("All")?.MatchedMean),
                        ("matched mean exit steps, Hard", D("Hard")?.MatchedMean),
                    };
                    foreach (var (where, value) in list)
                        if (value is { } v) claims.Add((set, arm.Name, control, where, v));
                }
        var adjusted = Significance.Holm(claims.Select(c => Significance.TwoSidedP(c.Value)).ToArray());
        string unit = baseDirectories.Count > 1 ? "replicates" : "seeds";
        return claims.Select((c, i) => Verdict(c.Set, c.Arm, c.Control, c.Where, c.Value, adjusted[i], unit)).ToArray();
    }

    /// <summary>The controls a LoopRPT arm is compared with: equal steps and its equal-compute control, where present.</summary>
    private IEnumerable<string> ControlsOf(string arm)
    {
        var mine = ExperimentArm.EqualComputeControlOf(arms, arm)?.Name;
        return summary.Controls.Where(c => c == ExperimentArm.EqualStepsName || c == mine);
    }

    /// <summary>
    /// One verdict; <paramref name="adjustedP"/> is its Holm-adjusted p-value in the report's family (NaN: use the unadjusted
    /// test); <paramref name="unit"/> names what the values are over ("seeds", or "replicates" with several base models).
    /// </summary>
    internal static ExperimentVerdict Verdict(string set, string arm, string control, string where, MeanStd d, double adjustedP = double.NaN, string unit = "seeds")
    {
        string head = $"{arm} − {control} at {where} ({set})";
        if (!d.IsDefined)
            return new(set, arm, control, where, d, "undetermined", $"{head}: not computable (the bucket has no tokens in this set, or a curve does not reach the compared exit steps for every seed).");
        string value = ExperimentSummary.Points(d, signed: true) + " points";
        if (d.Count < 2)
            return new(set, arm, control, where, d, "undetermined", $"{head}: {value} (1 seed: no uncertainty estimate) → undetermined.");
        double hw = d.HalfWidth95, lo = d.Mean - hw, hi = d.Mean + hw, p = Significance.TwoSidedP(d);
        double decisive = double.IsNaN(adjustedP) ? p : adjustedP;
        string outcome = !(decisive < 0.05) ? "no clear difference" : d.Mean > 0 ? "higher" : "lower";
        string unadjusted = (lo > 0 || hi < 0) && outcome == "no clear difference" ? "; unadjusted, the interval excludes 0" : "";
        return new(set, arm, control, where, d, outcome,
            $"{head}: {value} ({d.Count} {unit}; 95 % CI {ExperimentSummary.Format(100 * lo, 2, true)} to {ExperimentSummary.Format(100 * hi, 2, true)}; {PremiseCheck.PText(p)}, Holm {PremiseCheck.PText(decisive)}{unadjusted}) → {outcome}.")
        {
            PValue = p, AdjustedPValue = adjustedP,
        };
    }

    /// <summary>One band plot per evaluation set (panels All and Hard); returns the paths.</summary>
    public IReadOnlyList<string> WritePlots(string root)
    {
        var paths = new List<string>();
        var used = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var set in summary.EvaluationSets)
        {
            var stem = "pareto-" + new string(set.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '.' or '_' or '-' ? ch : '_').ToArray());
            var name = stem + ".svg";
            for (int i = 2; !used.Add(name); i++) name = $"{stem}-{i}.svg";
            var panels = Shown.Select(bucket =>
            {
                var first = summary.Get(set, summary.Arms[0], bucket);
                var title = string.Format(C, "{0}: {1} (n={2})", bucket, runs[0].Evaluations[set][bucket].Label, first.Tokens);
                return new BandPanel(title, summary.Arms.Select(arm =>
                {
                    var s = summary.Get(set, arm, bucket);
                    return new BandSeries(arm,
                        s.MatchedAccuracy.Select((m, g) => new BandPoint(summary.Grid[g], m.Mean, m.Std)).ToArray(),
                        s.StepAccuracy.Select((m, t) => new BandPoint(t + 1, m.Mean, m.Std)).ToArray());
                }).ToArray());
            }).ToArray();
            var path = Path.Combine(root, name);
            Checkpoints.AtomicDirectory.WriteAllText(path, ParetoBandPlot.ToSvg(panels, $"{set}: accuracy vs. mean exit step, {options.Seeds} seed(s)", summary.Steps,
                "solid: Q-exit sweep at matched mean exit steps, mean over seeds; shaded: ±1 std · dashed: fixed exit s1..sT"));
            paths.Add(path);
        }
        return paths;
    }

    /// <summary>Long-format CSV: eval_set, arm, seed, bucket, kind (step | qexit), x (step or q), accuracy, mean_exit_step.</summary>
    public static string Csv(IReadOnlyList<ArmRun> runs, IReadOnlyList<ExperimentArm> arms)
    {
        var order = arms.Select(a => a.Name).Prepend(ExperimentArm.BaseName).ToList();
        var sb = new StringBuilder("eval_set,arm,seed,bucket,kind,x,accuracy,mean_exit_step\n");
        foreach (var set in runs[0].Evaluations.Keys)
            foreach (var run in runs.OrderBy(r => order.IndexOf(r.Arm) is var i && i < 0 ? int.MaxValue : i).ThenBy(r => r.Seed))
                foreach (var b in run.Evaluations[set].Buckets)
                {
                    for (int t = 0; t < b.StepAccuracy.Count; t++)
                        sb.Append(C, $"{set},{run.Arm},{run.Seed},{b.Name},step,{t + 1},{b.StepAccuracy[t]:R},{t + 1}\n");
                    foreach (var p in b.QExit)
                        sb.Append(C, $"{set},{run.Arm},{run.Seed},{b.Name},qexit,{p.Q:R},{p.Accuracy:R},{p.MeanExitStep:R}\n");
                }
        return sb.ToString();
    }

    /// <summary>report.md.</summary>
    public string Markdown(IReadOnlyList<ExperimentVerdict> verdicts, IReadOnlyList<string> plotFiles, int trained, TimeSpan elapsed)
    {
        var o = options;
        int T = summary.Steps;
        var sb = new StringBuilder();
        sb.Append("# Does LoopRPT help? A multi-seed experiment\n\n");
        if (!premise.Any(p => p.Holds)) sb.Append("> **Warning: ").Append(PremiseCheck.Warning).Append("** No later loop of the base model beats loop 1 beyond the noise on any evaluation set (premise check below).\n\n");
        sb.Append(C, $"Generated by `LoopRpt.Experiments.LoopRptExperiment` on {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC ({trained} run(s) trained in this invocation, {elapsed.TotalSeconds:F0} s). ");
        sb.Append(C, $"Accuracies are greedy next-token accuracy in %; differences are in percentage points; ± is the sample standard deviation over {Replicates}.\n\n");
        sb.Append(PremiseCheck.Markdown(premise)).Append('\n');
        foreach (var b in budgets) sb.Append("- ").Append(b.Text).Append('\n');
        if (budgets.Count > 0) sb.Append('\n');

        sb.Append("## Settings\n\n");
        sb.Append(C, $"- Base model{(baseDirectories.Count > 1 ? "s" : "")}: {string.Join(", ", baseDirectories.Select(d => $"`{d}`"))} — hidden {config.HiddenSize}, {config.NumHiddenLayers} layers × {config.TotalUtSteps} loops, vocabulary {config.VocabSize}, {config.ParameterCount():N0} parameters.\n");
        sb.Append(C, $"- Seeds 1..{o.Seeds}. A seed fixes the batch order and LoopRPT's rollout noise and exit sampling; all arms of a seed start from the base model and read the same batches, so differences are paired by seed.\n");
        if (baseDirectories.Count > 1)
            sb.Append(C, $"- {baseDirectories.Count} base models × {o.Seeds} seeds = {baseDirectories.Count * o.Seeds} replicates per arm; replicate r = (base − 1) × {o.Seeds} + seed (the `seed` column of results.csv; the base models are seeds 1..{baseDirectories.Count} of arm `base`). Differences are paired within a (base, seed), so ± includes the base models' variance; the t-intervals treat the replicates as independent, which the nesting of seeds in bases makes approximate.\n");
        var opt = o.Optimizer;
        sb.Append(C, $"- Every arm: AdamW, peak learning rate {opt.LearningRate:G3} (unless the arm sets its own), weight decay {opt.WeightDecay:G3}, cosine schedule with {100 * opt.WarmupFraction:G3} % warmup decaying to {(opt.MinLearningRateRatio == 0 ? "0" : string.Create(C, $"{opt.MinLearningRateRatio:G3} × the peak"))}, gradient clip {opt.GradientClip:G3}. Stage I controls use a constant exit-entropy weight beta = {o.ContinuationBeta:G3}.\n");
        sb.Append(C, $"- Compute: one LoopRPT step (published) costs {cost.Ratio:F2} Stage I steps ({(cost.Source == "given" ? "ratio given" : "analytic forward + backward FLOPs, `StepFlops`; docs/experiment.md §4.1")}), so `{ExperimentArm.EqualComputeName}` trains {cost.EqualComputeSteps} steps; each equal-compute control matches its LoopRPT arm's FLOPs (table below).\n");
        foreach (var (set, batches) in sets)
        {
            var counts = LoopEvaluator.BucketNames.Select(b => string.Create(C, $"{b} = {runs[0].Evaluations[set][b].Label}: {summary.Get(set, summary.Arms[0], b).Tokens:N0}"));
            sb.Append(C, $"- Evaluation set `{set}`: {batches.Count} batch(es); tokens {string.Join(", ", counts)} (nested buckets by the base model's last-step entropy H, `{o.Buckets}`).\n");
        }
        sb.Append(C, $"- Q-exit sweep q ∈ {{{string.Join(", ", summary.QValues.Select(q => q.ToString("0.###", C)))}}}. Pareto curves are compared at matched mean exit steps {summary.Grid[0]:0.##}, {summary.Grid[0] + o.ParetoGridStep:0.##}, …, {T}: per seed, accuracy is interpolated linearly along its {(o.ParetoIncludesFixedSteps ? "Q-exit sweep and fixed steps" : "Q-exit sweep")} sorted by mean exit step (no extrapolation; a point is reported only where every seed reaches it).\n\n");
        sb.Append("| arm | what | steps | learning rate | FLOPs per step (fwd + bwd) | × Stage I step | FLOPs of the run | wall-clock s per step (median) | CPU s per step | training s (all runs) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        double stage1 = cost.Of(ExperimentArm.EqualStepsName).Flops.Total;
        foreach (var a in arms)
        {
            var ac = cost.Of(a.Name);
            var t = timings.FirstOrDefault(x => x.Arm == a.Name);
            sb.Append(C, $"| {a.Name} | {a.Description} | {ac.Steps} | {a.LearningRate:G3} | {ac.Flops.Total:G3} ({ac.Flops.Forward:G3} + {ac.Flops.Backward:G3}) | {ac.Flops.Total / stage1:F2} | {ac.TotalFlops:G3} | ")
              .Append(t is null ? "– | – | – |\n" : string.Create(C, $"{t.MedianSecondsPerStep:F3} | {t.CpuSecondsPerStep:F3} | {t.Seconds:F0} |\n"));
        }
        sb.Append("\nWall-clock and CPU times are measured on whatever else the machine ran; the FLOPs size the controls.\n");

        sb.Append("\n## Verdicts\n\n");
        sb.Append(C, $"Each line is arm − control, paired by {(baseDirectories.Count > 1 ? "(base, seed)" : "seed")}, with a two-sided paired t-test. The list is one family of {verdicts.Count} tests: \"higher\"/\"lower\" only when the Holm-adjusted p-value is below 0.05 (family-wise error 5 %); a line whose unadjusted 95 % interval excludes 0 but whose adjusted p does not is marked so, and is exploratory.\n\n");
        foreach (var v in verdicts) sb.Append("- ").Append(v.Text).Append('\n');
        if (verdicts.Count == 0) sb.Append("- No LoopRPT arm and control pair to compare.\n");

        for (int i = 0; i < summary.EvaluationSets.Count; i++)
            Section(sb, summary.EvaluationSets[i], i < plotFiles.Count ? plotFiles[i] : null);

        sb.Append("\n## Files\n\n- `results.csv`: every arm × seed (and the base model, seed 0), bucket, step s1..sT and q (long format).\n");
        sb.Append("- `runs/ARM/seed-N/`: `evaluation.json`, `timing.json`, `arm.json`, and the trained `model/` directory (usable with `looprpt evaluate`).\n");
        sb.Append("- `experiment.json`, `cost.json`: the settings this folder was built with and every arm's FLOPs per step; rerunning the same experiment resumes.\n");
        return sb.ToString();
    }

    private void Section(StringBuilder sb, string set, string? plot)
    {
        int T = summary.Steps;
        var arms = summary.Arms;
        sb.Append(C, $"\n## Evaluation set `{set}`\n\n");
        sb.Append("### Accuracy (%) at each loop step, mean ± std over seeds\n\n| arm | bucket | ")
          .Append(string.Join(" | ", Enumerable.Range(1, T).Select(t => "s" + t))).Append(" |\n|---|---|")
          .Append(string.Concat(Enumerable.Repeat("---:|", T))).Append('\n');
        foreach (var bucket in Shown)
            foreach (var arm in arms)
                sb.Append(C, $"| {arm} | {bucket} | ").Append(string.Join(" | ", summary.Get(set, arm, bucket).StepAccuracy.Select(m => ExperimentSummary.Points(m)))).Append(" |\n");

        var q = options.ReportQ;
        sb.Append(C, $"\n### Q-exit at q = {q:0.###}: accuracy (%) and mean exit step\n\n| arm | All accuracy | All mean exit step | Hard accuracy | Hard mean exit step |\n|---|---:|---:|---:|---:|\n");
        foreach (var arm in arms)
        {
            var cells = Shown.Select(b => summary.Get(set, arm, b).QExit.First(p => Math.Abs(p.Q - q) < 1e-9))
                .Select(p => $"{ExperimentSummary.Points(p.Accuracy)} | {StepsText(p.MeanExitStep)}");
            sb.Append(C, $"| {arm} | {string.Join(" | ", cells)} |\n");
        }

        sb.Append("\n### Pareto curve at matched mean exit steps: accuracy (%), mean ± std over seeds\n\n");
        sb.Append("| arm | bucket | ").Append(string.Join(" | ", summary.Grid.Select(g => g.ToString("0.00", C)))).Append(" |\n|---|---|")
          .Append(string.Concat(Enumerable.Repeat("---:|", summary.Grid.Count))).Append('\n');
        foreach (var bucket in Shown)
            foreach (var arm in arms)
                sb.Append(C, $"| {arm} | {bucket} | ").Append(string.Join(" | ", summary.Get(set, arm, bucket).MatchedAccuracy.Select(m => ExperimentSummary.Points(m)))).Append(" |\n");
        if (plot is not null) sb.Append(C, $"\n![Pareto curves with seed bands, {set}]({plot})\n");

        var pairs = summary.Differences.Where(d => d.EvaluationSet == set && Shown.Contains(d.Bucket) && !summary.Controls.Contains(d.Arm))
            .OrderBy(d => Shown.ToList().IndexOf(d.Bucket)).ThenBy(d => summary.Controls.ToList().IndexOf(d.Control)).ThenBy(d => arms.ToList().IndexOf(d.Arm)).ToList();
        if (pairs.Count == 0) return;
        sb.Append(C, $"\n### Paired differences, arm − control (points; mean exit step in steps), mean ± std over seeds\n\n");
        sb.Append(C, $"| arm − control | bucket | s1 | s2 | s{T} | q={q:0.###} accuracy | q={q:0.###} mean exit step | matched exit steps, mean |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
        foreach (var d in pairs)
        {
            var atQ = d.QExit.First(p => Math.Abs(p.Q - q) < 1e-9);
            sb.Append(C, $"| {d.Arm} − {d.Control} | {d.Bucket} | {ExperimentSummary.Points(d.StepAccuracy[0], signed: true)} | {(T >= 2 ? ExperimentSummary.Points(d.StepAccuracy[1], signed: true) : "–")} | ")
              .Append(C, $"{ExperimentSummary.Points(d.StepAccuracy[T - 1], signed: true)} | {ExperimentSummary.Points(atQ.Accuracy, signed: true)} | {StepsText(atQ.MeanExitStep, signed: true)} | {ExperimentSummary.Points(d.MatchedMean, signed: true)} |\n");
        }
        sb.Append("\nAt each matched mean exit step (points):\n\n| arm − control | bucket | ").Append(string.Join(" | ", summary.Grid.Select(g => g.ToString("0.00", C))))
          .Append(" |\n|---|---|").Append(string.Concat(Enumerable.Repeat("---:|", summary.Grid.Count))).Append('\n');
        foreach (var d in pairs)
            sb.Append(C, $"| {d.Arm} − {d.Control} | {d.Bucket} | ").Append(string.Join(" | ", d.MatchedAccuracy.Select(m => ExperimentSummary.Points(m, signed: true)))).Append(" |\n");
    }

    private string Replicates => baseDirectories.Count > 1 ? "base models × seeds (replicates)" : "seeds";

    private static string StepsText(MeanStd m, bool signed = false)
    {
        if (!m.IsDefined) return "–";
        var mean = ExperimentSummary.Format(m.Mean, 2, signed);
        return m.Count < 2 ? mean : mean + " ± " + ExperimentSummary.Format(m.Std, 2, signed: false);
    }
}
