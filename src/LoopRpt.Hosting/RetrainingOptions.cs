using LoopRpt.Training;

namespace LoopRpt.Hosting;

/// <summary>The held-out metric a candidate must improve on to be promoted.</summary>
public enum ValidationMetric
{
    /// <summary>Mean next-token cross-entropy (nats) on held-out data; lower is better.</summary>
    Loss,
    /// <summary>Next-token top-1 accuracy on held-out data; higher is better.</summary>
    Accuracy,
}

/// <summary>
/// Options of <see cref="RetrainingService"/>, bound from the <c>Retraining</c> child of the LoopRpt configuration
/// section. Checked when the host starts (<see cref="RetrainingOptionsValidator"/>).
/// </summary>
public sealed class RetrainingOptions
{
    /// <summary>Default values, shared by the options and the documentation.</summary>
    public static class Defaults
    {
        public static readonly TimeSpan Period = TimeSpan.FromHours(1);
        public static readonly TimeSpan DataPollInterval = TimeSpan.FromSeconds(30);
        public const double HoldoutFraction = 0.1;
        public const int BatchSize = 8;
        public const int CheckpointEvery = 50;
        public const int LogEvery = 10;
        public const double MinImprovement = 0.0;
        public const string ValidationExit = "last";
        public const long MaxValidationTokens = 65_536;
    }

    /// <summary>Time between scheduled rounds (a <see cref="PeriodicTimer"/>); <see cref="TimeSpan.Zero"/> disables the schedule. Default 1 hour.</summary>
    public TimeSpan Period { get; set; } = Defaults.Period;

    /// <summary>Run one round as soon as the service starts. Default false.</summary>
    public bool RunOnStart { get; set; }

    /// <summary>
    /// Folder of training data: <c>*.txt</c> files (UTF-8, one document each, encoded by <see cref="ITokenizerService"/>)
    /// and <c>*.tokens</c> files (little-endian int32 token ids). Names starting with '.' or ending in '.tmp' are ignored,
    /// so writers can create a file under a temporary name and rename it. Required.
    /// </summary>
    public string DataDirectory { get; set; } = "";

    /// <summary>
    /// How often <see cref="DataDirectory"/> is polled for new or changed files; content that is stable over two polls and
    /// differs from what the last round trained on triggers a round (so data that landed while the host was down counts). Polling, not a file-system watcher, so it also works on network and container volumes.
    /// <see cref="TimeSpan.Zero"/> disables it. Default 30 s.
    /// </summary>
    public TimeSpan DataPollInterval { get; set; } = Defaults.DataPollInterval;

    /// <summary>Folder of held-out data (same formats). When null, the last <see cref="HoldoutFraction"/> of every data file is held out.</summary>
    public string? ValidationDirectory { get; set; }

    /// <summary>Fraction of each data file held out for validation when <see cref="ValidationDirectory"/> is null. Default 0.1.</summary>
    public double HoldoutFraction { get; set; } = Defaults.HoldoutFraction;

    /// <summary>Working folder for the round in progress (its checkpoints and <c>state.json</c>). Default: <c>{Root}/training</c>.</summary>
    public string? WorkDirectory { get; set; }

    /// <summary>
    /// The stages every round runs, in order, starting from the serving model. At least one. The configuration binds straight
    /// into the core's <see cref="StageDefinition"/> (keys <c>Kind</c>, default <c>pretrain</c>, <c>Steps</c>, the optimizer
    /// settings <c>LearningRate</c> ... <c>GradientAccumulation</c> and <c>Parameters</c>, the objective's options by name,
    /// as the CLI's <c>--stages KIND:STEPS:NAME=VALUE</c>) and the <see cref="ObjectiveKindRegistry"/> resolves each (the
    /// built-in kinds and those added with <see cref="LoopRptHostingBuilder.AddStageKind"/>): settings absent from the
    /// configuration stay null and take the kind's <see cref="OptimizerDefaults"/>, a <c>looprpt</c> stage the published
    /// LoopRPT settings.
    /// </summary>
    public List<StageDefinition> Stages { get; set; } = [];

    /// <summary>Sequences per batch (training and validation). Default 8.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>Tokens per sequence. Default 64 (<see cref="TrainerOptions.Defaults.SequenceLength"/>, as on every surface).</summary>
    public int SequenceLength { get; set; } = TrainerOptions.Defaults.SequenceLength;

    /// <summary>Base seed; each round mixes in its number. Default 0.</summary>
    public long Seed { get; set; }

    /// <summary>Steps between checkpoints within a round (a host shutdown also writes one). Default 50.</summary>
    public int CheckpointEvery { get; set; } = Defaults.CheckpointEvery;

    /// <summary>Steps between training progress log entries. Default 10.</summary>
    public int LogEvery { get; set; } = Defaults.LogEvery;

    /// <summary>
    /// Loss-spike rule of the round's training (<see cref="TrainerOptions.SpikeFactor"/>): the round fails (serving
    /// unchanged) when the logged loss is above <c>max(SpikeFactor × m, m + 1)</c>, m its running median, for
    /// <see cref="SpikePatience"/> reports in a row. 0 turns the rule off. Default 3.
    /// </summary>
    public double SpikeFactor { get; set; } = TrainerOptions.Defaults.SpikeFactor;

    /// <summary>Logged losses in a row above the spike threshold that fail the round. Default 3.</summary>
    public int SpikePatience { get; set; } = TrainerOptions.Defaults.SpikePatience;

    /// <summary>Sane logged losses whose median is the spike rule's baseline. Default 20.</summary>
    public int SpikeWindow { get; set; } = TrainerOptions.Defaults.SpikeWindow;

    /// <summary>Held-out metric of the promotion test. Default <see cref="ValidationMetric.Loss"/>.</summary>
    public ValidationMetric Metric { get; set; } = ValidationMetric.Loss;

    /// <summary>
    /// Margin: the candidate is promoted only if it beats the serving model by more than this (nats of loss, or accuracy
    /// points as a fraction). Non-negative. Default 0 (any strict improvement).
    /// </summary>
    public double MinImprovement { get; set; } = Defaults.MinImprovement;

    /// <summary>Exit rule used by validation: <c>last</c>, <c>expected</c>, <c>q:0.5</c> (Q-exit) or <c>step:N</c> (0-based). Default "last".</summary>
    public string ValidationExit { get; set; } = Defaults.ValidationExit;

    /// <summary>At most this many held-out tokens are scored per model and round. Default 65536.</summary>
    public long MaxValidationTokens { get; set; } = Defaults.MaxValidationTokens;

    /// <summary>The core trainer options these settings bind to (checked by <see cref="TrainerOptions.Validate"/>); a round adds its folder, seed and progress.</summary>
    internal TrainerOptions ToTrainerOptions() => new()
    {
        KeepCheckpoints = 1, CheckpointEvery = CheckpointEvery, LogEvery = LogEvery, OnCancel = CancellationBehavior.CheckpointAndThrow,
        SpikeFactor = SpikeFactor, SpikePatience = SpikePatience, SpikeWindow = SpikeWindow,
    };
}
