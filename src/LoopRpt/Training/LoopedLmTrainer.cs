using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Training;

/// <summary>
/// The training loop, nanoGPT-plain: for each stage a fresh AdamW over the objective's parameters, warmup + cosine
/// learning rate, gradient accumulation, clipping, and checkpoints that resume exactly.
/// <para>Host synchronization: one per optimizer step, the gradient norm (needed to clip and to skip non-finite steps);
/// losses and metrics stay on the device and are read every <see cref="TrainerOptions.LogEvery"/> steps, plus once at
/// the first step of each stage (the loss-spike rule's baseline) and once when a run stops diverged.</para>
/// <para>Divergence: <see cref="TrainerOptions.MaxConsecutiveBadSteps"/> non-finite steps in a row, or the loss-spike rule
/// (<see cref="LossSpikeRule"/>) over the logged losses, stop the run with a <see cref="TrainingDivergedException"/>. A
/// checkpoint holds the weights of the step after it, so it counts as sane only once the next loss read (a report, or the
/// baseline read) is sane; until then older checkpoints are not pruned below it. On a stop, the checkpoints whose following
/// loss was not sane are removed and <c>latest</c> names the last sane one; none is written during a streak.</para>
/// <para>Determinism: batches and objective randomness are functions of (seed, global step, micro-step), so on CPU a run
/// of N steps, a resume, and M more steps equals N + M steps straight.</para>
/// </summary>
public sealed class LoopedLmTrainer
{
    public const string TrainingStateFile = "training_state.safetensors";
    public const string TrainerStateFile = "trainer_state.json";

    private readonly TrainerOptions _options;

    public LoopedLmTrainer(TrainerOptions? options = null)
    {
        _options = options ?? new TrainerOptions();
        _options.Validate();
    }

    /// <summary>Runs the stages in order on <paramref name="lm"/> (trained in place).</summary>
    public TrainingResult Train(OuroForCausalLM lm, ITokenBatchSource source, IReadOnlyList<TrainingStage> stages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lm);
        ArgumentNullException.ThrowIfNull(source);
        if (stages.Count == 0) throw new ArgumentException("A training plan needs at least one stage.", nameof(stages));
        foreach (var s in stages) s.Validate();

        var manager = _options.CheckpointDirectory is { } root ? new CheckpointManager(root, _options.KeepCheckpoints) : null;
        manager?.RemoveStaleTemporaries();      // leftovers of an interrupted save: this run owns the folder now
        var baseMeta = _options.BaseMeta?.Clone() ?? new ModelMeta();
        var state = new TrainerState
        {
            GlobalStep = baseMeta.Step, TokensSeen = baseMeta.TokensSeen, Seed = _options.Seed,
            Plan = stages.Select(s => new StageRecord(s.Objective.Name, s.Steps)).ToList(),
        };
        string? resumeDir = _options.Resume ? manager!.Latest() : null;
        if (resumeDir is not null)
        {
            state = ReadTrainerState(resumeDir, stages);
            ModelWeights.Load(lm, Path.Combine(resumeDir, ModelWeights.FileName));
            baseMeta = ModelDirectory.ReadMeta(resumeDir);
            baseMeta.Stages = baseMeta.Stages.Take(baseMeta.Stages.Count - state.StageRecordsInPlan(baseMeta)).ToList();
        }

        TrainingProgress? last = null;
        var ledger = manager is null ? null : new CheckpointLedger(manager, resumeDir);
        for (int si = state.StageIndex; si < stages.Count; si++)
        {
            var stage = stages[si];
            long startStep = si == state.StageIndex ? state.StageStep : 0;
            if (si != state.StageIndex) state.SkippedSteps = 0;
            state.StageIndex = si;
            state.StageStep = startStep;
            if (startStep >= stage.Steps && stage.Steps > 0)
            {
                resumeDir = null;     // the checkpoint closed this stage; the next one starts with a fresh optimizer
                continue;
            }

            var run = new StageRun(this, lm, source, stage, state, ledger, baseMeta, stages, resumeDir);
            try
            {
                var (completed, progress) = run.Execute(cancellationToken);
                last = progress ?? last;
                if (!completed) return new TrainingResult(false, state.GlobalStep, state.TokensSeen, last, ledger?.Latest, MetaFor(baseMeta, stages, state, last));
            }
            finally
            {
                run.Dispose();
            }
            resumeDir = null;
        }
        return new TrainingResult(true, state.GlobalStep, state.TokensSeen, last, ledger?.Latest, MetaFor(baseMeta, stages, state, last));
    }

    /// <summary>The metadata a model trained by this plan should carry (history of stages appended): checkpoints and <see cref="TrainingResult.Meta"/>.</summary>
    internal static ModelMeta MetaFor(ModelMeta baseMeta, IReadOnlyList<TrainingStage> stages, TrainerState state, TrainingProgress? progress)
    {
        var m = baseMeta.Clone();
        m.Step = state.GlobalStep;
        m.TokensSeen = state.TokensSeen;
        for (int i = 0; i <= state.StageIndex && i < stages.Count; i++)
            m.Stages.Add(new StageRecord(stages[i].Objective.Name, i < state.StageIndex ? stages[i].Steps : state.StageStep));
        if (progress is not null) m.Metrics = progress.Metrics.ToDictionary(kv => kv.Key, kv => kv.Value);
        m.CreatedUtc = DateTime.UtcNow;
        return m;
    }

    private static TrainerState ReadTrainerState(string dir, IReadOnlyList<TrainingStage> stages)
    {
        var path = Path.Combine(dir, TrainerStateFile);
        if (!File.Exists(path)) throw new InvalidDataException($"Checkpoint '{dir}' has no {TrainerStateFile}; it cannot be resumed (was it saved as a plain model?).");
        TrainerState? state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e); }
        if (state is null) throw new InvalidDataException($"'{path}' is empty.");
        var plan = stages.Select(s => new StageRecord(s.Objective.Name, s.Steps)).ToList();
        if (!state.Plan.SequenceEqual(plan))
            throw new InvalidOperationException(
                $"Checkpoint '{dir}' was written by the plan [{string.Join(", ", state.Plan.Select(p => $"{p.Name}:{p.Steps}"))}], " +
                $"but this run's plan is [{string.Join(", ", plan.Select(p => $"{p.Name}:{p.Steps}"))}]; resume needs the same plan.");
        return state;
    }

    /// <summary>Where a plan stands; serialized as trainer_state.json in every checkpoint.</summary>
    internal sealed class TrainerState
    {
        [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = 1;
        [JsonPropertyName("stage_index")] public int StageIndex { get; set; }
        [JsonPropertyName("stage_step")] public long StageStep { get; set; }
        [JsonPropertyName("global_step")] public long GlobalStep { get; set; }
        [JsonPropertyName("tokens_seen")] public long TokensSeen { get; set; }
        [JsonPropertyName("optimizer_steps")] public long OptimizerSteps { get; set; }
        [JsonPropertyName("skipped_steps")] public long SkippedSteps { get; set; }
        [JsonPropertyName("seed")] public long Seed { get; set; }
        [JsonPropertyName("plan")] public List<StageRecord> Plan { get; set; } = [];
        /// <summary>The loss-spike rule's window of the current stage (absent in checkpoints of older versions: rebuilt).</summary>
        [JsonPropertyName("spike_history")] public List<double>? SpikeHistory { get; set; }

        /// <summary>How many of meta's stage records this plan appended (to rebuild the base history on resume).</summary>
        public int StageRecordsInPlan(ModelMeta meta) => Math.Min(meta.Stages.Count, StageIndex + 1);
    }

    /// <summary>
    /// This run's checkpoints and what is known of them: <see cref="Confirmed"/>, the newest whose following loss was read
    /// and sane (or the checkpoint resumed from), and the pending ones written after it, not yet judged.
    /// </summary>
    private sealed class CheckpointLedger(CheckpointManager manager, string? confirmed)
    {
        private readonly List<(string Dir, long Step)> _pending = [];

        public CheckpointManager Manager { get; } = manager;
        public string? Confirmed { get; private set; } = confirmed;

        /// <summary>The newest checkpoint of this run (pending or confirmed).</summary>
        public string? Latest => _pending.Count > 0 ? _pending[^1].Dir : Confirmed;

        public bool HasPending => _pending.Count > 0;

        public string Save(long step, Action<string> fill)
        {
            var dir = Manager.Save(step, fill, protect: Confirmed);
            // Pruned beyond KeepCheckpoints (never the confirmed one), or rewritten: no longer tracked.
            _pending.RemoveAll(p => string.Equals(p.Dir, dir, StringComparison.Ordinal) || !Directory.Exists(p.Dir));
            if (!string.Equals(dir, Confirmed, StringComparison.Ordinal)) _pending.Add((dir, step));
            return dir;
        }

        /// <summary>The pending checkpoints of global step &lt;= <paramref name="step"/> are sane; the newest becomes <see cref="Confirmed"/>.</summary>
        public void ConfirmThrough(long step)
        {
            int n = _pending.FindLastIndex(p => p.Step <= step) + 1;
            if (n == 0) return;
            Confirmed = _pending[n - 1].Dir;
            _pending.RemoveRange(0, n);
        }

        /// <summary>Removes the pending checkpoints of global step &gt;= <paramref name="step"/> and points <c>latest</c> back; returns how many.</summary>
        public int DiscardFrom(long step)
        {
            var doomed = _pending.Where(p => p.Step >= step).Select(p => p.Dir).ToList();
            if (doomed.Count == 0) return 0;
            _pending.RemoveAll(p => p.Step >= step);
            Manager.RollBack(Latest, doomed);
            return doomed.Count;
        }
    }

    /// <summary>One stage's optimizer, schedule and loop.</summary>
    private sealed class StageRun : IDisposable
    {
        private readonly LoopedLmTrainer _trainer;
        private readonly OuroForCausalLM _lm;
        private readonly ITokenBatchSource _source;
        private readonly TrainingStage _stage;
        private readonly TrainerState _state;
        private readonly CheckpointLedger? _ledger;
        private readonly LossSpikeRule _spike;
        private int _removed;                 // checkpoints of this stage discarded by spike reports
        private readonly ModelMeta _baseMeta;
        private readonly IReadOnlyList<TrainingStage> _stages;
        private readonly AdamW _optimizer;
        private readonly LearningRateSchedule _schedule;
        private readonly Dictionary<string, Tensor> _interval = new(StringComparer.Ordinal);
        private int _intervalSteps;
        private double _intervalGradNorm;
        private long _intervalTokens;

        public StageRun(LoopedLmTrainer trainer, OuroForCausalLM lm, ITokenBatchSource source, TrainingStage stage, TrainerState state,
                        CheckpointLedger? ledger, ModelMeta baseMeta, IReadOnlyList<TrainingStage> stages, string? resumeDir)
        {
            _trainer = trainer;
            _lm = lm;
            _source = source;
            _stage = stage;
            _state = state;
            _ledger = ledger;
            _baseMeta = baseMeta;
            _stages = stages;
            stage.Objective.Attach(lm);
            _optimizer = new AdamW(stage.Objective.TrainableParameters(lm), stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay);
            _schedule = LearningRateSchedule.Create(stage.LearningRate, stage.Steps, stage.WarmupFraction, stage.MinLearningRateRatio);
            if (resumeDir is not null) LoadTrainingState(resumeDir);
            var o = trainer._options;
            // A stage resumed mid-way judges with the window it had; a new stage starts an empty one (its loss has another scale).
            _spike = new LossSpikeRule(o.SpikeFactor, o.SpikePatience, o.SpikeWindow, resumeDir is not null ? state.SpikeHistory : null);
            state.SpikeHistory = [.. _spike.History];
        }

        private string SpikeMetric => _stage.Objective.SpikeMetric;

        private TrainerOptions Options => _trainer._options;

        public (bool Completed, TrainingProgress? Progress) Execute(CancellationToken ct)
        {
            var clock = Stopwatch.StartNew();
            var intervalClock = Stopwatch.StartNew();
            TrainingProgress? progress = null;
            int consecutiveBad = 0;
            long badFrom = 0;              // global step of the first step of the current non-finite streak
            var trainable = _optimizer.Parameters.ToList();
            double lr = 0;

            while (_state.StageStep < _stage.Steps)
            {
                if (ct.IsCancellationRequested)
                {
                    // Not in the middle of a streak: the last checkpoint stays the latest.
                    if (consecutiveBad == 0 && _spike.Streak == 0) SaveCheckpoint(progress);
                    if (Options.OnCancel == CancellationBehavior.ReturnPartial) return (false, progress);
                    ct.ThrowIfCancellationRequested();
                }

                lr = _schedule.At(_state.StageStep);
                double gradNorm;
                using (var scope = NewDisposeScope())
                {
                    var stepMetrics = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                    int micro = _stage.GradientAccumulation;
                    for (int m = 0; m < micro; m++)
                    {
                        var batch = _source.GetBatch(_state.GlobalStep, m);
                        var (inputs, targets) = batch.ToTensors(_lm.Device);
                        var output = _stage.Objective.Compute(_lm, inputs, targets, _state.GlobalStep, _state.StageStep, m);
                        if (output.Backward is { } backward) backward(1.0 / micro);
                        else (output.Loss / micro).backward();
                        foreach (var (k, v) in output.Metrics)
                            stepMetrics[k] = stepMetrics.TryGetValue(k, out var acc) ? acc + v / micro : v / micro;
                        _intervalTokens += (long)batch.BatchSize * batch.SequenceLength;
                        _state.TokensSeen += (long)batch.BatchSize * batch.SequenceLength;
                    }

                    // The one host sync per step: the gradient norm, to clip and to catch NaN/Inf loss or gradients.
                    gradNorm = nn.utils.clip_grad_norm_(trainable, _stage.GradientClip > 0 ? _stage.GradientClip : double.MaxValue, 2.0);
                    if (double.IsFinite(gradNorm))
                    {
                        if (_spike.Enabled && _spike.NeedsBaseline && stepMetrics.TryGetValue(SpikeMetric, out var watched))
                        {
                            // Once per stage: the loss of the stage's first weights is the spike rule's baseline, so a run
                            // that blows up within its first logging interval is caught too. It is that checkpoint's loss.
                            double baseline = watched.mean().to_type(ScalarType.Float64).cpu().item<double>();
                            _spike.Seed(baseline);
                            if (double.IsFinite(baseline)) _ledger?.ConfirmThrough(_state.GlobalStep);
                        }
                        _optimizer.Step(lr);
                        _stage.Objective.AfterOptimizerStep(_lm, _state.GlobalStep);
                        consecutiveBad = 0;
                        foreach (var (k, v) in stepMetrics)
                        {
                            if (!_interval.TryGetValue(k, out var acc))
                                _interval[k] = acc = zeros_like(v).DetachFromDisposeScope();
                            acc.add_(v);
                        }
                        _intervalSteps++;
                        _intervalGradNorm += gradNorm;
                    }
                    else
                    {
                        if (consecutiveBad == 0) badFrom = _state.GlobalStep;
                        _state.SkippedSteps++;
                        consecutiveBad++;
                    }
                    _optimizer.ZeroGrad();
                }

                _state.StageStep++;
                _state.GlobalStep++;
                _state.OptimizerSteps = _optimizer.StepCount;
                if (consecutiveBad >= Options.MaxConsecutiveBadSteps)
                    throw StopNonFinite(consecutiveBad, badFrom);

                bool last = _state.StageStep == _stage.Steps;
                if (_state.StageStep % Options.LogEvery == 0 || last)
                {
                    int steps = _intervalSteps;
                    var report = Report(lr, clock.Elapsed, intervalClock.Elapsed.TotalSeconds);
                    intervalClock.Restart();
                    var verdict = SpikeVerdict.Sane;
                    if (steps > 0)
                    {
                        // The report read the interval's mean loss; it judges every checkpoint written since the last one.
                        if (report.Metrics.TryGetValue(SpikeMetric, out var watched)) verdict = _spike.Observe(watched[0]);
                        if (verdict == SpikeVerdict.Sane) _ledger?.ConfirmThrough(consecutiveBad > 0 ? badFrom - 1 : long.MaxValue);
                        else if (verdict != SpikeVerdict.Elevated) _removed += _ledger?.DiscardFrom(long.MinValue) ?? 0;  // their weights led to this spike
                    }
                    progress = report with { SpikeStreak = _spike.Streak };
                    Options.Progress?.Report(progress);
                    if (verdict == SpikeVerdict.Diverged || (last && _spike.Streak > 0)) throw StopSpike();
                }
                // No checkpoint in the middle of a non-finite or spike streak: the last good one stays the latest.
                if (_ledger is not null && consecutiveBad == 0 && _spike.Streak == 0 && (last || (Options.CheckpointEvery > 0 && _state.StageStep % Options.CheckpointEvery == 0)))
                    SaveCheckpoint(progress);
            }
            return (true, progress);
        }

        /// <summary>
        /// The non-finite guard fired: checkpoints from the streak's first step on are suspect (the step after them failed);
        /// older pending ones are judged by the loss logged since the last report (one host read).
        /// </summary>
        private TrainingDivergedException StopNonFinite(int consecutiveBad, long badFrom)
        {
            int removed = 0;
            if (_ledger is not null)
            {
                removed = _ledger.DiscardFrom(badFrom);
                if (_ledger.HasPending)
                {
                    // Kept only if the loss since the last report is sane (within the rule's admission bound).
                    using var scope = NewDisposeScope();
                    bool insane = _intervalSteps > 0 && _interval.TryGetValue(SpikeMetric, out var acc)
                        && (acc / _intervalSteps).mean().to_type(ScalarType.Float64).cpu().item<double>() is var v
                        && (!double.IsFinite(v) || v > _spike.AdmissionBound);
                    if (insane) removed += _ledger.DiscardFrom(long.MinValue);
                    else _ledger.ConfirmThrough(badFrom - 1);
                }
            }
            var message = $"Training diverged: {consecutiveBad} consecutive steps of stage '{_stage.Objective.Name}' (up to step {_state.StageStep}) had a non-finite loss or gradient. "
                          + Kept(removed) + "Lower the learning rate, raise the warmup, or check the data.";
            return new TrainingDivergedException(message, DivergenceKind.NonFinite, _stage.Objective.Name, _state.StageStep, _state.GlobalStep, _ledger?.Confirmed, removed);
        }

        /// <summary>The loss-spike rule fired (or the stage ended inside a spike streak); the suspect checkpoints went at the streak's first report.</summary>
        private TrainingDivergedException StopSpike()
        {
            var c = System.Globalization.CultureInfo.InvariantCulture;
            int n = _spike.Streak;
            var values = string.Join(", ", _spike.StreakValues.Select(v => v.ToString("G4", c)));
            var message = string.Create(c,
                $"Training diverged: the {SpikeMetric} of stage '{_stage.Objective.Name}' was above {_spike.Threshold:G4} = max({_spike.Factor:G3} × its running median {_spike.Median:G4}, median + {LossSpikeRule.MinimumRise:G2}) ") +
                (n >= _spike.Patience ? $"for {n} consecutive reports" : $"in the last {n} report(s) when the stage ended") +
                $" (up to step {_state.StageStep}: {values}). " + Kept(_removed) +
                "Lower the learning rate, raise the warmup, or check the data (the spike factor and patience tune the rule; factor 0 turns it off).";
            return new TrainingDivergedException(message, DivergenceKind.LossSpike, _stage.Objective.Name, _state.StageStep, _state.GlobalStep, _ledger?.Confirmed, _removed);
        }

        private string Kept(int removed)
        {
            if (_ledger is null) return "";
            var keep = _ledger.Confirmed;
            if (keep is null) return "No checkpoint with a sane loss was written. ";
            return $"The last good checkpoint '{keep}' is intact" +
                   (removed > 0 ? $"; {removed} checkpoint(s) written after it were removed, as the loss after them was not sane. " : ". ");
        }

        /// <summary>Reads the interval's metrics (the periodic host read) into a report and starts a new interval; the caller emits it.</summary>
        private TrainingProgress Report(double lr, TimeSpan elapsed, double intervalSeconds)
        {
            var metrics = new Dictionary<string, double[]>(StringComparer.Ordinal);
            using (NewDisposeScope())
            {
                foreach (var (k, v) in _interval)
                    metrics[k] = (v / Math.Max(1, _intervalSteps)).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
            }
            var progress = new TrainingProgress
            {
                Stage = _stage.Objective.Name, StageIndex = _state.StageIndex, Step = _state.StageStep, StageSteps = _stage.Steps,
                GlobalStep = _state.GlobalStep, Loss = metrics.TryGetValue("loss", out var l) ? l[0] : double.NaN, Metrics = metrics,
                LearningRate = lr, GradNorm = _intervalSteps > 0 ? _intervalGradNorm / _intervalSteps : double.NaN,
                TokensPerSecond = intervalSeconds > 0 ? _intervalTokens / intervalSeconds : 0, TokensSeen = _state.TokensSeen,
                SkippedSteps = _state.SkippedSteps, Elapsed = elapsed,
            };
            foreach (var v in _interval.Values) v.Dispose();
            _interval.Clear();
            _intervalSteps = 0;
            _intervalGradNorm = 0;
            _intervalTokens = 0;
            return progress;
        }

        private string? SaveCheckpoint(TrainingProgress? progress)
        {
            if (_ledger is null) return null;
            var meta = MetaFor(_baseMeta, _stages, _state, progress);
            _state.SpikeHistory = [.. _spike.History];
            return _ledger.Save(_state.GlobalStep, dir =>
            {
                ModelDirectory.WriteInto(dir, _lm, meta);
                var tensors = _optimizer.StateTensors().Select(t => ("optimizer." + t.Name, t.Tensor))
                    .Concat(_stage.Objective.StateTensors().Select(t => ("objective." + t.Name, t.Tensor)));
                SafeTensors.Save(Path.Combine(dir, TrainingStateFile), tensors);
                File.WriteAllText(Path.Combine(dir, TrainerStateFile), JsonSerializer.Serialize(_state, new JsonSerializerOptions { WriteIndented = true }));
            });
        }

        private void LoadTrainingState(string dir)
        {
            using var file = SafeTensors.Open(Path.Combine(dir, TrainingStateFile));
            bool CopyInto(string prefix, string name, Tensor destination)
            {
                if (!file.Tensors.ContainsKey(prefix + name)) return false;
                file.CopyInto(prefix + name, destination);
                return true;
            }
            _optimizer.LoadState((n, t) => CopyInto("optimizer.", n, t), _state.OptimizerSteps);
            _stage.Objective.LoadState((n, t) => CopyInto("objective.", n, t));
        }

        public void Dispose()
        {
            foreach (var v in _interval.Values) v.Dispose();
            _optimizer.Dispose();
        }
    }
}
