using System.Globalization;
using System.Text;
using LoopRpt.Training;

namespace LoopRpt.Cli.Display;

/// <summary>What the display knows about one stage (or one experiment run).</summary>
internal sealed class StageView
{
    public required string Name { get; init; }
    public long Steps { get; set; }
    public long Step { get; set; }
    /// <summary>Finished before this process started (an experiment run done earlier).</summary>
    public bool DoneEarlier { get; init; }
    public bool Finished { get; set; }
    /// <summary>The stage's own elapsed time at its last report (frozen once finished).</summary>
    public TimeSpan ReportedElapsed { get; set; }
    /// <summary>When the last report arrived (the live clock adds the time since).</summary>
    public DateTime? ReportedAt { get; set; }
    public TrainingProgress? Last { get; set; }
    /// <summary>Tokens/s of each report, weighted by its interval, for the stage's mean.</summary>
    public double RateSeconds { get; set; }
    public double RateTokens { get; set; }
    /// <summary>Tokens/s of every report so far in this stage.</summary>
    public List<double> Rates { get; } = [];
    /// <summary>The median of the earlier reports' tokens/s when the last report was judged; 0 before.</summary>
    public double Baseline { get; set; }
    /// <summary>Lowest rate / earlier median when it fell below <see cref="TrainingMonitor.SlowdownRatio"/>; null otherwise.</summary>
    public double? Slowdown { get; set; }
    /// <summary>The last report was slow (below the ratio).</summary>
    public bool SlowNow { get; set; }

    public bool Started => ReportedAt is not null;

    /// <summary>Mean tokens/s over the stage's reports.</summary>
    public double MeanRate => RateSeconds > 0 ? RateTokens / RateSeconds : Last?.TokensPerSecond ?? 0;
}

/// <summary>
/// Follows a training run's progress reports for the live display, the plain progress lines and the summaries: each
/// stage's last report, a clock that freezes when the stage ends, its mean throughput, and a warning when throughput
/// collapses below <see cref="SlowdownRatio"/> of the median of the stage's earlier reports (another job competing for
/// the cores, typically).
/// Thread-safe: reports arrive on the training thread, the live display renders on a timer.
/// </summary>
internal sealed class TrainingMonitor
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>A report whose tokens/s is below this fraction of the median of the stage's earlier reports is a slowdown.</summary>
    public const double SlowdownRatio = 0.4;

    /// <summary>Reports over shorter intervals are too noisy to judge (a collapse lengthens them anyway).</summary>
    public static readonly TimeSpan MinimumInterval = TimeSpan.FromSeconds(1);

    private readonly Func<DateTime> _now;
    private readonly List<StageView> _stages;

    public TrainingMonitor(IReadOnlyList<(string Name, long Steps)> stages, IReadOnlyList<bool>? completed = null, Func<DateTime>? clock = null)
    {
        _now = clock ?? (() => DateTime.UtcNow);
        _stages = stages.Select((s, i) => new StageView
        {
            Name = s.Name, Steps = Math.Max(1, s.Steps), DoneEarlier = completed is not null && i < completed.Count && completed[i],
        }).ToList();
        foreach (var s in _stages.Where(s => s.DoneEarlier)) { s.Step = s.Steps; s.Finished = true; }
    }

    /// <summary>Guards every read and write of the stage views.</summary>
    public object Sync { get; } = new();

    public IReadOnlyList<StageView> Stages => _stages;

    public DateTime Now => _now();

    /// <summary>Stages that reported a slowdown (none: throughput held).</summary>
    public IReadOnlyList<StageView> Slowdowns { get { lock (Sync) return _stages.Where(s => s.Slowdown is not null).ToList(); } }

    /// <summary>
    /// Records <paramref name="p"/>; returns a warning (one line) the first time a stage's throughput collapses, else null.
    /// </summary>
    public string? Report(TrainingProgress p)
    {
        lock (Sync)
        {
            if (p.StageIndex < 0 || p.StageIndex >= _stages.Count) return null;
            var now = _now();
            for (int i = 0; i < p.StageIndex; i++)
            {
                var earlier = _stages[i];
                if (!earlier.Finished) { earlier.Finished = true; earlier.Step = earlier.Steps; }
            }
            var s = _stages[p.StageIndex];
            if (p.StageSteps > 0) s.Steps = p.StageSteps;
            s.Step = p.Step;
            double interval = Math.Max(0, (p.Elapsed - (s.Started ? s.ReportedElapsed : TimeSpan.Zero)).TotalSeconds);
            s.ReportedElapsed = p.Elapsed;
            s.ReportedAt = now;
            s.Last = p;
            s.Finished = p.Step >= p.StageSteps;
            double rate = p.TokensPerSecond;
            string? warning = null;
            s.SlowNow = false;
            if (rate > 0 && s.Rates.Count > 0 && interval >= MinimumInterval.TotalSeconds)
            {
                s.Baseline = Median(s.Rates);
                if (rate < SlowdownRatio * s.Baseline)
                {
                    s.SlowNow = true;
                    if (s.Slowdown is null) warning = SlowdownWarning(s, rate);
                    s.Slowdown = Math.Min(s.Slowdown ?? 1, rate / s.Baseline);
                }
            }
            if (rate > 0)
            {
                s.Rates.Add(rate);
                s.RateSeconds += interval;
                s.RateTokens += rate * interval;
            }
            return warning;
        }
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static string SlowdownWarning(StageView s, double rate)
    {
        var load = Models.ThreadPolicy.LoadAverage();
        int threads = TorchSharp.torch.get_num_threads();
        return string.Create(C, $"warning: {s.Name}: throughput fell to {rate:N0} tokens/s, {rate / s.Baseline:0.00}× this stage's earlier {s.Baseline:N0} (median). ") +
               string.Create(C, $"Another job is probably competing for the cores (load average {(load is { } l ? l.ToString("0.00", C) : "unknown")}, {Environment.ProcessorCount} processors, {threads} libtorch thread{(threads == 1 ? "" : "s")}); ") +
               (threads > 1 ? "--threads 1 avoids the contention." : "wait for the other job, or run this one elsewhere.");
    }

    /// <summary>The stage's clock: frozen at its last report once finished, else running on from it.</summary>
    public TimeSpan Elapsed(StageView s)
    {
        if (!s.Started) return TimeSpan.Zero;
        if (s.Finished) return s.ReportedElapsed;
        var since = _now() - s.ReportedAt!.Value;
        return s.ReportedElapsed + (since > TimeSpan.Zero ? since : TimeSpan.Zero);
    }

    /// <summary>Estimated time left (null before the first report); counts down between reports.</summary>
    public TimeSpan? Remaining(StageView s)
    {
        if (s.Finished) return TimeSpan.Zero;
        if (s.Last is not { } p || p.Step <= 0) return null;
        var left = p.Eta - (_now() - s.ReportedAt!.Value);
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }

    // ---- What the quantities are called -----------------------------------------------------------------------

    /// <summary>The objective a report belongs to: pretrain, gate or looprpt (from its metrics; experiment runs are relabeled).</summary>
    public static string Kind(TrainingProgress p)
        => p.Stage is "pretrain" or "gate" or "looprpt" ? p.Stage
            : p.Metrics.ContainsKey("reward_mean") ? "looprpt"
            : p.Metrics.ContainsKey("continue_label") ? "gate"
            : p.Metrics.ContainsKey("beta") ? "pretrain" : "objective";

    /// <summary>
    /// The name of a stage's loss: <c>pretrain_objective</c> (Ouro Stage I: exit-weighted cross-entropy minus the entropy
    /// bonus), <c>gate_loss</c> (Stage II: the gate's binary cross-entropy), <c>looprpt_objective</c> (policy-gradient,
    /// model, entropy and KL terms). None of them is the LM loss; that is <see cref="LmLoss"/>.
    /// </summary>
    public static string LossName(TrainingProgress p) => Kind(p) switch
    {
        "pretrain" => "pretrain_objective",
        "gate" => "gate_loss",
        "looprpt" => "looprpt_objective",
        _ => "objective",
    };

    /// <summary>Next-token cross-entropy (nats) per loop step on the training batches, or null when the objective reports none.</summary>
    public static double[]? LmLossByStep(TrainingProgress p) => p.Metrics.TryGetValue("step_loss", out var v) && v.Length > 0 ? v : null;

    /// <summary>Cross-entropy at the last loop step: what <c>score --q 1</c> reports on held-out text.</summary>
    public static double? LmLoss(TrainingProgress p) => LmLossByStep(p)?[^1];

    /// <summary>Model forward passes per batch token (LoopRPT: teacher, clean pass and rollouts; 1 for Stage I and the gate).</summary>
    public static double ForwardPasses(TrainingProgress p) => p.Metrics.TryGetValue("forward_passes", out var v) && v.Length == 1 && v[0] > 0 ? v[0] : 1;

    /// <summary>Mean exit step (1-indexed): the objective's expected exit step, or LoopRPT's Q-exit step of the student.</summary>
    public static double? ExitStep(TrainingProgress p)
        => p.MeanExitStep ?? (p.Metrics.TryGetValue("student_exit_step", out var se) ? se[0] : null);

    /// <summary>What the plain progress line adds to <see cref="TrainingProgress.ToString"/>: LoopRPT's compute per token, a slowdown.</summary>
    public string PlainSuffix(TrainingProgress p)
    {
        var sb = new StringBuilder();
        double f = ForwardPasses(p);
        if (f != 1) sb.Append(C, $" fwd_tok_s={p.TokensPerSecond * f:F0}");
        lock (Sync)
        {
            if (p.StageIndex >= 0 && p.StageIndex < _stages.Count && _stages[p.StageIndex] is { SlowNow: true, Baseline: > 0 } s)
                sb.Append(C, $" slowdown={p.TokensPerSecond / s.Baseline:0.00}");
        }
        return sb.ToString();
    }

    /// <summary>
    /// One parseable line per stage that reported: its named loss, the LM loss (last step and per step), mean exit step,
    /// mean tokens/s (and for LoopRPT forward passes per token and forward-pass tokens/s), seconds, and any slowdown.
    /// </summary>
    public IReadOnlyList<string> StageLines()
    {
        lock (Sync)
        {
            var lines = new List<string>();
            for (int i = 0; i < _stages.Count; i++)
            {
                var s = _stages[i];
                if (s.Last is not { } p) continue;
                var sb = new StringBuilder();
                sb.Append(C, $"stage index={i + 1} name={s.Name} steps={s.Step}/{s.Steps} {LossName(p)}={p.Loss:F4}");
                if (LmLossByStep(p) is { } lm)
                    sb.Append(C, $" lm_loss={lm[^1]:F4} lm_loss_by_step=[{string.Join(",", lm.Select(x => x.ToString("F4", C)))}]");
                if (ExitStep(p) is { } e) sb.Append(C, $" exit_step={e:F2}");
                if (p.Metrics.TryGetValue("reward_mean", out var r)) sb.Append(C, $" reward={r[0]:F4}");
                double f = ForwardPasses(p);
                sb.Append(C, $" tok_s={s.MeanRate:F0}");
                if (f != 1) sb.Append(C, $" fwd_per_tok={f:F2} fwd_tok_s={s.MeanRate * f:F0}");
                sb.Append(C, $" seconds={s.ReportedElapsed.TotalSeconds:F1}");
                if (s.Slowdown is { } sd) sb.Append(C, $" slowdown={sd:0.00}");
                lines.Add(sb.ToString());
            }
            return lines;
        }
    }

    /// <summary>The named loss and LM loss of the last stage that reported, for the run's summary line (empty when none did).</summary>
    public string LastStageFields()
    {
        lock (Sync)
        {
            var s = _stages.LastOrDefault(x => x.Last is not null);
            if (s?.Last is not { } p) return "";
            var text = string.Create(C, $"last_stage={s.Name} {LossName(p)}={p.Loss:F4}");
            if (LmLoss(p) is { } lm) text += string.Create(C, $" lm_loss={lm:F4}");
            return text;
        }
    }
}
