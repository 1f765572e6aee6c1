using System.Globalization;
using System.Text;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;

namespace LoopRpt.Experiments;

/// <summary>Writes an experiment's report.md, results.csv and band plots, and states the verdicts from the numbers.</summary>
internal sealed class ExperimentReport(ExperimentOptions options, IReadOnlyList<ExperimentArm> arms, OuroConfig config, string baseDirectory,
                                       ExperimentSummary summary, IReadOnlyList<ArmRun> runs, CostMeasurement? cost,
                                       IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> sets)
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private static readonly string[] Shown = ["All", "Hard"];

    /// <summary>
    /// The claims, per evaluation set, LoopRPT arm and control: accuracy at s1 (Hard, All), at the last step (All), and the
    /// mean difference at matched mean exit steps (All, Hard). "higher"/"lower" when the 95 % t-interval of the paired mean
    /// difference excludes 0.
    /// </summary>
    public IReadOnlyList<ExperimentVerdict> Verdicts()
    {
        var list = new List<ExperimentVerdict>();
        int T = summary.Steps;
        foreach (var set in summary.EvaluationSets)
            foreach (var arm in arms.Where(a => !a.IsControl))
                foreach (var control in summary.Controls)
                {
                    PairedDifference? D(string bucket) => summary.Difference(set, arm.Name, control, bucket);
                    var claims = new (string Where, MeanStd? Value)[]
                    {
                        ("s1, Hard", D("Hard")?.StepAccuracy[0]),
                        ("s1, All", D("All")?.StepAccuracy[0]),
                        ($"s{T}, All", D("All")?.StepAccuracy[T - 1]),
                        ("matched mean exit steps, All", D("All")?.MatchedMean),
                        ("matched mean exit steps, Hard", D("Hard")?.MatchedMean),
                    };
                    foreach (var (where, value) in claims)
                        if (value is { } v) list.Add(Verdict(set, arm.Name, control, where, v));
                }
        return list;
    }

    internal static ExperimentVerdict Verdict(string set, string arm, string control, string where, MeanStd d)
    {
        string head = $"{arm} − {control} at {where} ({set})";
        if (!d.IsDefined)
            return new(set, arm, control, where, d, "undetermined", $"{head}: not computable (the bucket has no tokens in this set, or a curve does not reach the compared exit steps for every seed).");
        string value = ExperimentSummary.Points(d, signed: true) + " points";
        if (d.Count < 2)
            return new(set, arm, control, where, d, "undetermined", $"{head}: {value} (1 seed: no uncertainty estimate) → undetermined.");
        double hw = d.HalfWidth95, lo = d.Mean - hw, hi = d.Mean + hw;
        string outcome = lo > 0 ? "higher" : hi < 0 ? "lower" : "no clear difference";
        return new(set, arm, control, where, d, outcome,
            $"{head}: {value} ({d.Count} seeds; 95 % CI {ExperimentSummary.Format(100 * lo, 2, true)} to {ExperimentSummary.Format(100 * hi, 2, true)}) → {outcome}.");
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
        sb.Append(C, $"Generated by `LoopRpt.Experiments.LoopRptExperiment` on {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC ({trained} run(s) trained in this invocation, {elapsed.TotalSeconds:F0} s). ");
        sb.Append("Accuracies are greedy next-token accuracy in %; differences are in percentage points; ± is the sample standard deviation over seeds.\n\n");

        sb.Append("## Settings\n\n");
        sb.Append(C, $"- Base model: `{baseDirectory}` — hidden {config.HiddenSize}, {config.NumHiddenLayers} layers × {config.TotalUtSteps} loops, vocabulary {config.VocabSize}, {config.ParameterCount():N0} parameters.\n");
        sb.Append(C, $"- Seeds 1..{o.Seeds}. A seed fixes the batch order and LoopRPT's rollout noise and exit sampling; all arms of a seed start from the base model and read the same batches, so differences are paired by seed.\n");
        var opt = o.Optimizer;
        sb.Append(C, $"- Every arm: AdamW, peak learning rate {opt.LearningRate:G3} (unless the arm sets its own), weight decay {opt.WeightDecay:G3}, cosine schedule with {100 * opt.WarmupFraction:G3} % warmup decaying to {(opt.MinLearningRateRatio == 0 ? "0" : string.Create(C, $"{opt.MinLearningRateRatio:G3} × the peak"))}, gradient clip {opt.GradientClip:G3}. Stage I controls use a constant exit-entropy weight beta = {o.ContinuationBeta:G3}.\n");
        if (cost is { } c)
            sb.Append(C, $"- Cost ratio: one LoopRPT step costs {c.Ratio:F2} Stage I steps ({c.Source}{(double.IsFinite(c.LoopRptSecondsPerStep) ? string.Create(C, $": median wall-clock {c.LoopRptSecondsPerStep:F3} s vs. {c.Stage1SecondsPerStep:F3} s per optimizer step; the process's CPU time over the two runs gives {c.CpuRatio:F2}") : "")}), so the equal-compute control trains {c.EqualComputeSteps} steps.\n");
        else
            sb.Append("- Cost ratio: not measured (no complete seed-1 LoopRPT and equal-steps runs).\n");
        foreach (var (set, batches) in sets)
        {
            var counts = LoopEvaluator.BucketNames.Select(b => string.Create(C, $"{b} = {runs[0].Evaluations[set][b].Label}: {summary.Get(set, summary.Arms[0], b).Tokens:N0}"));
            sb.Append(C, $"- Evaluation set `{set}`: {batches.Count} batch(es); tokens {string.Join(", ", counts)} (nested buckets by the base model's last-step entropy H, `{o.Buckets}`).\n");
        }
        sb.Append(C, $"- Q-exit sweep q ∈ {{{string.Join(", ", summary.QValues.Select(q => q.ToString("0.###", C)))}}}. Pareto curves are compared at matched mean exit steps {summary.Grid[0]:0.##}, {summary.Grid[0] + o.ParetoGridStep:0.##}, …, {T}: per seed, accuracy is interpolated linearly along its {(o.ParetoIncludesFixedSteps ? "Q-exit sweep and fixed steps" : "Q-exit sweep")} sorted by mean exit step (no extrapolation; a point is reported only where every seed reaches it).\n\n");
        sb.Append("| arm | what | steps | learning rate |\n|---|---|---:|---:|\n");
        foreach (var a in arms)
        {
            string steps = a.Kind == ArmKind.Stage1EqualCompute ? cost?.EqualComputeSteps.ToString(C) ?? "–" : o.Steps.ToString(C);
            sb.Append(C, $"| {a.Name} | {a.Description} | {steps} | {a.LearningRate:G3} |\n");
        }

        sb.Append("\n## Verdicts\n\n");
        sb.Append("Each line is arm − control, paired by seed; \"higher\"/\"lower\" when the 95 % t-interval of the mean difference excludes 0.\n\n");
        foreach (var v in verdicts) sb.Append("- ").Append(v.Text).Append('\n');
        if (verdicts.Count == 0) sb.Append("- No LoopRPT arm and control pair to compare.\n");

        for (int i = 0; i < summary.EvaluationSets.Count; i++)
            Section(sb, summary.EvaluationSets[i], i < plotFiles.Count ? plotFiles[i] : null);

        sb.Append("\n## Files\n\n- `results.csv`: every arm × seed (and the base model, seed 0), bucket, step s1..sT and q (long format).\n");
        sb.Append("- `runs/ARM/seed-N/`: `evaluation.json`, `timing.json`, `arm.json`, and the trained `model/` directory (usable with `looprpt evaluate`).\n");
        sb.Append("- `experiment.json`, `cost.json`: the settings this folder was built with and the cost ratio; rerunning the same experiment resumes.\n");
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

        var pairs = summary.Differences.Where(d => d.EvaluationSet == set && Shown.Contains(d.Bucket))
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

    private static string StepsText(MeanStd m, bool signed = false)
    {
        if (!m.IsDefined) return "–";
        var mean = ExperimentSummary.Format(m.Mean, 2, signed);
        return m.Count < 2 ? mean : mean + " ± " + ExperimentSummary.Format(m.Std, 2, signed: false);
    }
}
