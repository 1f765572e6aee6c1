using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Training;

/// <summary>
/// The training loop, nanoGPT-plain: for each stage a fresh AdamW over the objective's parameters, warmup + cosine
/// learning rate, gradient accumulation, clipping, and checkpoints that resume exactly.
/// <para>Host synchronization: one per optimizer step, the gradient norm (needed to clip and to skip non-finite steps);
/// losses and metrics stay on the device and are read every <see cref="TrainerOptions.LogEvery"/> steps, plus once at
/// the first step of each stage (the loss-spike rule's baseline) and once when a run stops diverged.</para>
/// <para>Divergence (<see cref="DivergenceGuard"/>): <see cref="TrainerOptions.MaxConsecutiveBadSteps"/> non-finite steps in a
/// row, or the loss-spike rule (<see cref="LossSpikeRule"/>) over the logged losses, stop the run with a
/// <see cref="TrainingDivergedException"/>. A checkpoint holds the weights of the step after it, so it counts as sane only
/// once the next loss read (a report, or the baseline read) is sane (<see cref="CheckpointLedger"/>); until then older
/// checkpoints are not pruned below it. On a stop, the checkpoints whose following loss was not sane are removed and
/// <c>latest</c> names the last sane one; none is written during a streak.</para>
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
        if (stages.Take(stages.Count - 1).Any(s => s.StopOnPlateau is not null))
            throw new ArgumentException("A stage stopped on a held-out plateau must be the plan's last stage (the next stage would not know its length).", nameof(stages));
        if (_options.Resume && stages.Any(s => s.StopOnPlateau is not null))
            throw new ArgumentException("A stage stopped on a held-out plateau cannot be resumed (its evaluations and best weights are not checkpointed); set Resume to false.", nameof(stages));

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
        PlateauOutcome? plateau = null;
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
                plateau = run.Plateau ?? plateau;
                if (!completed) return new TrainingResult(false, state.GlobalStep, state.TokensSeen, last, ledger?.Latest, MetaFor(baseMeta, stages, state, last));
            }
            finally
            {
                run.Dispose();
            }
            resumeDir = null;
        }
        return new TrainingResult(true, state.GlobalStep, state.TokensSeen, last, ledger?.Latest, MetaFor(baseMeta, stages, state, last)) { Plateau = plateau };
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
    /// One stage's optimizer, schedule and loop. <see cref="Execute"/> reads top to bottom: batch → compute → backward →
    /// clip → step → report → checkpoint; the divergence guard (<see cref="DivergenceGuard"/>) and the checkpoint ledger
    /// (<see cref="CheckpointLedger"/>) keep the rest.
    /// </summary>
    private sealed class StageRun : IDisposable
    {
        private readonly LoopedLmTrainer _trainer;
        private readonly OuroForCausalLM _lm;
        private readonly ITokenBatchSource _source;
        private readonly TrainingStage _stage;
        private readonly TrainerState _state;
        private readonly CheckpointLedger? _ledger;
        private readonly DivergenceGuard _guard;
        private readonly ModelMeta _baseMeta;
        private readonly IReadOnlyList<TrainingStage> _stages;
        private readonly AdamW _optimizer;
        private readonly List<TorchSharp.Modules.Parameter> _trainable;
        private readonly LearningRateSchedule _schedule;
        private readonly PlateauRun? _plateau;
        private readonly Dictionary<string, Tensor> _interval = new(StringComparer.Ordinal);
        // Held for the stage (no per-step Scalar): a temporary Scalar can be finalized while the native call reads it.
        private readonly Scalar _one = 1, _microBatches;
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
            stage.Objective.BeginStage(stage.Steps);            // the stage's length, stated once (TrainingStage.Steps)
            _optimizer = new AdamW(stage.Objective.TrainableParameters(lm), stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay);
            _trainable = _optimizer.Parameters.ToList();
            _microBatches = stage.GradientAccumulation;
            _schedule = LearningRateSchedule.Create(stage.LearningRate, stage.Steps, stage.WarmupFraction, stage.MinLearningRateRatio);
            if (resumeDir is not null) LoadTrainingState(resumeDir);
            // A stage resumed mid-way judges with the window it had; a new stage starts an empty one (its loss has another scale).
            _guard = new DivergenceGuard(trainer._options, stage.Objective.Name, stage.Objective.SpikeMetric, ledger, resumeDir is not null ? state.SpikeHistory : null);
            state.SpikeHistory = [.. _guard.SpikeHistory];
            _plateau = stage.StopOnPlateau is { } p ? new PlateauRun(p) : null;
        }

        /// <summary>How the stage's plateau stop ended (after <see cref="Execute"/> completed), or null.</summary>
        public PlateauOutcome? Plateau { get; private set; }

        private TrainerOptions Options => _trainer._options;

        public (bool Completed, TrainingProgress? Progress) Execute(CancellationToken ct)
        {
            var clock = Stopwatch.StartNew();
            var intervalClock = Stopwatch.StartNew();
            TrainingProgress? progress = null;

            while (_state.StageStep < _stage.Steps)
            {
                if (ct.IsCancellationRequested)
                {
                    if (_guard.Calm) SaveCheckpoint(progress);          // not in a streak: the last checkpoint stays the latest otherwise
                    if (Options.OnCancel == CancellationBehavior.ReturnPartial) return (false, progress);
                    ct.ThrowIfCancellationRequested();
                }

                double lr = _schedule.At(_state.StageStep);
                using (NewDisposeScope())
                {
                    var stepMetrics = ComputeAndBackward();                          // batch → compute → backward, per micro-batch
                    double gradNorm = Clip();                                        // the one host sync per step
                    if (double.IsFinite(gradNorm))
                    {
                        _guard.SeedBaseline(stepMetrics, _state.GlobalStep);
                        Step(lr);
                        Accumulate(stepMetrics, gradNorm);
                    }
                    else
                    {
                        _guard.StepSkipped(_state.GlobalStep);
                        _state.SkippedSteps++;
                    }
                    _optimizer.ZeroGrad();
                }
                _state.StageStep++;
                _state.GlobalStep++;
                _state.OptimizerSteps = _optimizer.StepCount;
                _guard.ThrowIfNonFinite(_state.StageStep, _state.GlobalStep, IntervalLoss);

                bool cap = _state.StageStep == _stage.Steps;
                bool plateaued = _plateau?.AfterStep(_lm, _state.StageStep, cap) == true;      // held-out evaluation, when due
                bool last = cap || plateaued;
                if (last && _plateau is not null) Plateau = _plateau.Finish(_lm, _state.StageStep, plateaued);     // best weights back
                if (_state.StageStep % Options.LogEvery == 0 || last)
                {
                    int steps = _intervalSteps;
                    progress = _guard.Judge(Report(lr, clock.Elapsed, intervalClock.Elapsed.TotalSeconds), steps);    // report
                    intervalClock.Restart();
                    Options.Progress?.Report(progress);
                    _guard.ThrowIfSpiked(progress, last);
                }
                if (_guard.Calm && (last || (Options.CheckpointEvery > 0 && _state.StageStep % Options.CheckpointEvery == 0)))
                    SaveCheckpoint(progress);                                                                       // checkpoint
                if (plateaued) break;
            }
            return (true, progress);
        }

        /// <summary>Every micro-batch of the step: its batch, the objective's loss and its backward pass (scaled by 1 / micro-batches); the step's metrics.</summary>
        private Dictionary<string, Tensor> ComputeAndBackward()
        {
            var stepMetrics = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            int micro = _stage.GradientAccumulation;
            for (int m = 0; m < micro; m++)
            {
                var batch = _source.GetBatch(_state.GlobalStep, m);
                var (inputs, targets) = batch.ToTensors(_lm.Device);
                var output = _stage.Objective.Compute(_lm, inputs, targets, _state.GlobalStep, _state.StageStep, m);
                if (output.Backward is { } backward) backward(1.0 / micro);
                else output.Loss.div(_microBatches).backward();
                foreach (var (k, v) in output.Metrics)
                {
                    var share = v.div(_microBatches);
                    stepMetrics[k] = stepMetrics.TryGetValue(k, out var acc) ? acc.add(share, _one) : share;
                }
                _intervalTokens += (long)batch.BatchSize * batch.SequenceLength;
                _state.TokensSeen += (long)batch.BatchSize * batch.SequenceLength;
            }
            return stepMetrics;
        }

        /// <summary>Clips the gradient norm (0: no clipping) and returns it: the one host read per step, which also catches NaN/Inf loss or gradients.</summary>
        private double Clip() => nn.utils.clip_grad_norm_(_trainable, _stage.GradientClip > 0 ? _stage.GradientClip : double.MaxValue, 2.0);

        /// <summary>The optimizer step at <paramref name="lr"/>, then the objective's own update (e.g. its EMA teacher).</summary>
        private void Step(double lr)
        {
            _optimizer.Step(lr);
            _stage.Objective.AfterOptimizerStep(_lm, _state.GlobalStep);
            _guard.StepTaken();
        }

        /// <summary>Adds a taken step's metrics (on the device) and gradient norm to the logging interval.</summary>
        private void Accumulate(Dictionary<string, Tensor> stepMetrics, double gradNorm)
        {
            foreach (var (k, v) in stepMetrics)
            {
                if (!_interval.TryGetValue(k, out var acc))
                    _interval[k] = acc = zeros_like(v).DetachFromDisposeScope();
                acc.add_(v, _one);
            }
            _intervalSteps++;
            _intervalGradNorm += gradNorm;
        }

        /// <summary>The mean watched loss since the last report (one host read), or null when there is none.</summary>
        private double? IntervalLoss()
        {
            if (_intervalSteps == 0 || !_interval.TryGetValue(_guard.Metric, out var acc)) return null;
            using var scope = NewDisposeScope();
            using Scalar steps = _intervalSteps;
            return acc.div(steps).mean().to_type(ScalarType.Float64).cpu().item<double>();
        }

        /// <summary>Reads the interval's metrics (the periodic host read) into a report and starts a new interval; the caller emits it.</summary>
        private TrainingProgress Report(double lr, TimeSpan elapsed, double intervalSeconds)
        {
            var metrics = new Dictionary<string, double[]>(StringComparer.Ordinal);
            using (NewDisposeScope())
            {
                using Scalar steps = Math.Max(1, _intervalSteps);
                foreach (var (k, v) in _interval)
                    metrics[k] = v.div(steps).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
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
            _state.SpikeHistory = [.. _guard.SpikeHistory];
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
            _plateau?.Dispose();
            _one.Dispose();
            _microBatches.Dispose();
        }
    }
}
