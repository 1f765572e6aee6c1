using System.Globalization;
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
        public const int SequenceLength = 128;
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

    /// <summary>The stages every round runs, in order, starting from the serving model. At least one.</summary>
    public List<StageOptions> Stages { get; set; } = [];

    /// <summary>Sequences per batch (training and validation). Default 8.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>Tokens per sequence. Default 128.</summary>
    public int SequenceLength { get; set; } = Defaults.SequenceLength;

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
}

/// <summary>One stage of a retraining round: which objective (by kind) and its optimizer settings.</summary>
public sealed class StageOptions
{
    /// <summary>Objective kind, resolved by <see cref="IStageObjectiveFactory"/>: built in are <c>pretrain</c>, <c>gate</c> and <c>looprpt</c>. Default "pretrain".</summary>
    public string Kind { get; set; } = StageObjectiveFactory.Pretrain;

    /// <summary>Optimizer steps of this stage. At least 1.</summary>
    public long Steps { get; set; }

    /// <summary>Peak learning rate. Default <see cref="TrainingStage.Defaults.LearningRate"/>.</summary>
    public double LearningRate { get; set; } = TrainingStage.Defaults.LearningRate;

    // Settings absent from the configuration stay null and take the defaults of the stage's kind when the stage is built
    // (ObjectiveKindRegistry): a looprpt stage gets the published LoopRPT settings, a registered kind its own. (Not resolved
    // in a getter: the configuration binder reads each property and writes it back, which would freeze another kind's defaults.)

    /// <summary>Final rate of the cosine decay as a fraction of the peak; null: the kind's default, 0.1 (<c>looprpt</c> stages 0, published).</summary>
    public double? MinLearningRateRatio { get; set; }

    /// <summary>Fraction of the stage spent in linear warmup; null: the kind's default, 0.03 (<c>looprpt</c> stages too, published).</summary>
    public double? WarmupFraction { get; set; }

    /// <summary>Decoupled weight decay on matrices; null: the kind's default, 0.1 (<c>looprpt</c> stages 0.01, published).</summary>
    public double? WeightDecay { get; set; }

    /// <summary>Gradient-norm clip, 0 disables clipping; null: the kind's default, 1.0 (<c>looprpt</c> stages too, published).</summary>
    public double? GradientClip { get; set; }

    /// <summary>Micro-batches per optimizer step. Default 1.</summary>
    public int GradientAccumulation { get; set; } = 1;

    /// <summary>
    /// Objective-specific settings by name (case-insensitive): the property names of the kind's options class, e.g. <c>Beta</c>
    /// for <c>pretrain</c>, <c>K</c> and <c>Gamma</c> for <c>gate</c>. Values are invariant-culture strings (enum values by
    /// name); bound by <see cref="ObjectiveKind.BindOptions"/>, as the CLI's <c>--stages KIND:STEPS:NAME=VALUE</c>.
    /// </summary>
    public Dictionary<string, string> Parameters { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>A numeric parameter, or <paramref name="fallback"/> when absent; throws <see cref="ArgumentException"/> when not a number.</summary>
    public double GetDouble(string name, double fallback)
    {
        var value = Find(name);
        if (value is null) return fallback;
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d))
            throw new ArgumentException($"Stage '{Kind}': parameter '{name}' must be a number; got '{value}'.", nameof(Parameters));
        return d;
    }

    /// <summary>A string parameter, or <paramref name="fallback"/> when absent.</summary>
    public string? GetString(string name, string? fallback = null) => Find(name) ?? fallback;

    /// <summary>Throws <see cref="ArgumentException"/> naming any parameter outside <paramref name="known"/>.</summary>
    public void EnsureOnlyParameters(params string[] known)
    {
        foreach (var key in Parameters.Keys)
            if (!known.Contains(key, StringComparer.OrdinalIgnoreCase))
                throw new ArgumentException(
                    $"Stage '{Kind}' has no parameter '{key}'; known parameters: {(known.Length == 0 ? "(none)" : string.Join(", ", known))}.", nameof(Parameters));
    }

    /// <summary>The core library's stage for <paramref name="objective"/> with these settings (absent ones: the built-in kind's defaults).</summary>
    public TrainingStage ToTrainingStage(LoopRpt.Objectives.ITrainingObjective objective) => ObjectiveKindRegistry.BuiltIn.CreateStage(ToDefinition(), objective);

    /// <summary>This stage in the core plan form (settings absent from the configuration stay null: the kind fills them in).</summary>
    public StageDefinition ToDefinition() => new()
    {
        Kind = Kind, Steps = Steps, LearningRate = LearningRate, MinLearningRateRatio = MinLearningRateRatio, WarmupFraction = WarmupFraction,
        WeightDecay = WeightDecay, GradientClip = GradientClip, GradientAccumulation = GradientAccumulation,
        Parameters = new Dictionary<string, string>(Parameters, StringComparer.OrdinalIgnoreCase),
    };

    // The configuration binder may replace the dictionary with one that ignores our comparer: look up case-insensitively.
    private string? Find(string name)
        => Parameters.FirstOrDefault(kv => string.Equals(kv.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
}
