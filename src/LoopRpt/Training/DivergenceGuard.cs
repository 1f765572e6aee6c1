using static TorchSharp.torch;

namespace LoopRpt.Training;

/// <summary>
/// The divergence guard of one stage: <see cref="TrainerOptions.MaxConsecutiveBadSteps"/> non-finite steps in a row, or the
/// loss-spike rule (<see cref="LossSpikeRule"/>) over the logged losses, stop the run with a <see cref="TrainingDivergedException"/>.
/// It judges the <see cref="CheckpointLedger"/>'s pending checkpoints by the loss read after them: a sane read confirms them,
/// a spike removes them, and a stop leaves <c>latest</c> naming the last sane one.
/// </summary>
internal sealed class DivergenceGuard
{
    private readonly LossSpikeRule _spike;
    private readonly CheckpointLedger? _ledger;
    private readonly int _maxConsecutiveBad;
    private readonly string _stage;
    private int _consecutiveBad;
    private long _badFrom;                 // global step of the first step of the current non-finite streak
    private int _removed;                  // checkpoints of this stage discarded by spike reports
    private SpikeVerdict _verdict;         // of the last report judged

    /// <summary>A guard for stage <paramref name="stage"/> watching <paramref name="metric"/>; <paramref name="history"/> is the spike window of a stage resumed mid-way.</summary>
    public DivergenceGuard(TrainerOptions options, string stage, string metric, CheckpointLedger? ledger, IEnumerable<double>? history)
    {
        _spike = new LossSpikeRule(options.SpikeFactor, options.SpikePatience, options.SpikeWindow, history);
        _maxConsecutiveBad = options.MaxConsecutiveBadSteps;
        _stage = stage;
        _ledger = ledger;
        Metric = metric;
    }

    /// <summary>The watched metric (the objective's <see cref="Objectives.ITrainingObjective.SpikeMetric"/>).</summary>
    public string Metric { get; }

    /// <summary>The spike rule's window, checkpointed so a resumed run judges as a straight one.</summary>
    public IReadOnlyList<double> SpikeHistory => _spike.History;

    /// <summary>Spike reports in a row so far.</summary>
    public int SpikeStreak => _spike.Streak;

    /// <summary>No non-finite or spike streak in progress: a checkpoint may be written (none is written during a streak).</summary>
    public bool Calm => _consecutiveBad == 0 && _spike.Streak == 0;

    /// <summary>
    /// Once per stage, before its first optimizer step: the loss of the stage's first weights is the spike rule's baseline
    /// (one host read), so a run that blows up within its first logging interval is caught too. It is that checkpoint's loss.
    /// </summary>
    public void SeedBaseline(IReadOnlyDictionary<string, Tensor> stepMetrics, long globalStep)
    {
        if (!_spike.Enabled || !_spike.NeedsBaseline || !stepMetrics.TryGetValue(Metric, out var watched)) return;
        double baseline = watched.mean().to_type(ScalarType.Float64).cpu().item<double>();
        _spike.Seed(baseline);
        if (double.IsFinite(baseline)) _ledger?.ConfirmThrough(globalStep);
    }

    /// <summary>A step with a finite gradient norm was taken: a non-finite streak ends.</summary>
    public void StepTaken() => _consecutiveBad = 0;

    /// <summary>Step <paramref name="globalStep"/> had a non-finite loss or gradient and was skipped.</summary>
    public void StepSkipped(long globalStep)
    {
        if (_consecutiveBad == 0) _badFrom = globalStep;
        _consecutiveBad++;
    }

    /// <summary>
    /// Throws when <see cref="TrainerOptions.MaxConsecutiveBadSteps"/> steps in a row were skipped (the run is then at
    /// <paramref name="stageStep"/> / <paramref name="globalStep"/>). <paramref name="intervalLoss"/> reads the mean watched
    /// loss since the last report (null: none), which judges the checkpoints written before the streak.
    /// </summary>
    public void ThrowIfNonFinite(long stageStep, long globalStep, Func<double?> intervalLoss)
    {
        if (_consecutiveBad >= _maxConsecutiveBad) throw StopNonFinite(stageStep, globalStep, intervalLoss);
    }

    /// <summary>
    /// Judges a report (<paramref name="steps"/> optimizer steps since the last one): its mean loss confirms every checkpoint
    /// written since the last report, or a spike removes them (their weights led to it). Returns the report with the streak.
    /// </summary>
    public TrainingProgress Judge(TrainingProgress report, int steps)
    {
        _verdict = SpikeVerdict.Sane;
        if (steps > 0)
        {
            if (report.Metrics.TryGetValue(Metric, out var watched)) _verdict = _spike.Observe(watched[0]);
            if (_verdict == SpikeVerdict.Sane) _ledger?.ConfirmThrough(_consecutiveBad > 0 ? _badFrom - 1 : long.MaxValue);
            else if (_verdict != SpikeVerdict.Elevated) _removed += _ledger?.DiscardFrom(long.MinValue) ?? 0;
        }
        return report with { SpikeStreak = _spike.Streak };
    }

    /// <summary>Throws when the judged report stopped the run: the rule fired, or the stage ended (<paramref name="last"/>) inside a spike streak.</summary>
    public void ThrowIfSpiked(TrainingProgress judged, bool last)
    {
        if (_verdict == SpikeVerdict.Diverged || (last && _spike.Streak > 0)) throw StopSpike(judged.Step, judged.GlobalStep);
    }

    /// <summary>
    /// The non-finite guard fired: checkpoints from the streak's first step on are suspect (the step after them failed);
    /// older pending ones are judged by the loss logged since the last report (one host read).
    /// </summary>
    private TrainingDivergedException StopNonFinite(long stageStep, long globalStep, Func<double?> intervalLoss)
    {
        int removed = 0;
        if (_ledger is not null)
        {
            removed = _ledger.DiscardFrom(_badFrom);
            if (_ledger.HasPending)
            {
                // Kept only if the loss since the last report is sane (within the rule's admission bound).
                bool insane = intervalLoss() is { } v && (!double.IsFinite(v) || v > _spike.AdmissionBound);
                if (insane) removed += _ledger.DiscardFrom(long.MinValue);
                else _ledger.ConfirmThrough(_badFrom - 1);
            }
        }
        var message = $"Training diverged: {_consecutiveBad} consecutive steps of stage '{_stage}' (up to step {stageStep}) had a non-finite loss or gradient. "
                      + Kept(removed) + "Lower the learning rate, raise the warmup, or check the data.";
        return new TrainingDivergedException(message, DivergenceKind.NonFinite, _stage, stageStep, globalStep, _ledger?.Confirmed, removed);
    }

    /// <summary>The loss-spike rule fired (or the stage ended inside a spike streak); the suspect checkpoints went at the streak's first report.</summary>
    private TrainingDivergedException StopSpike(long stageStep, long globalStep)
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        int n = _spike.Streak;
        var values = string.Join(", ", _spike.StreakValues.Select(v => v.ToString("G4", c)));
        var message = string.Create(c,
            $"Training diverged: the {Metric} of stage '{_stage}' was above {_spike.Threshold:G4} = max({_spike.Factor:G3} × its running median {_spike.Median:G4}, median + {LossSpikeRule.MinimumRise:G2}) ") +
            (n >= _spike.Patience ? $"for {n} consecutive reports" : $"in the last {n} report(s) when the stage ended") +
            $" (up to step {stageStep}: {values}). " + Kept(_removed) +
            "Lower the learning rate, raise the warmup, or check the data (the spike factor and patience tune the rule; factor 0 turns it off).";
        return new TrainingDivergedException(message, DivergenceKind.LossSpike, _stage, stageStep, globalStep, _ledger?.Confirmed, _removed);
    }

    private string Kept(int removed)
    {
        if (_ledger is null) return "";
        var keep = _ledger.Confirmed;
        if (keep is null) return "No checkpoint with a sane loss was written. ";
        return $"The last good checkpoint '{keep}' is intact" +
               (removed > 0 ? $"; {removed} checkpoint(s) written after it were removed, as the loss after them was not sane. " : ". ");
    }
}
