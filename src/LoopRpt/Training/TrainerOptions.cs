using LoopRpt.Checkpoints;

namespace LoopRpt.Training;

/// <summary>Options of <see cref="LoopedLmTrainer"/> that apply to every stage.</summary>
public sealed class TrainerOptions
{
    /// <summary>Default values, shared by the options and the surfaces (CLI, hosting, ML.NET).</summary>
    public static class Defaults
    {
        /// <summary>
        /// Tokens per training window (not a trainer option: the batch source's), one default for the CLI's <c>--seq-len</c>,
        /// hosting's <c>RetrainingOptions.SequenceLength</c> and ML.NET's <c>Options.SequenceLength</c>. 64: the CLI's figures
        /// (README, docs/experiment.md) were measured with it, and attention costs half of 128's on a CPU.
        /// </summary>
        public const int SequenceLength = 64;

        public const int LogEvery = 10;
        public const int KeepCheckpoints = 2;
        public const int MaxConsecutiveBadSteps = 5;
        public const double SpikeFactor = 3.0;
        public const int SpikePatience = 3;
        public const int SpikeWindow = 20;
    }

    /// <summary>Steps between progress reports (and the only host reads of the loss). Default 10.</summary>
    public int LogEvery { get; set; } = Defaults.LogEvery;

    /// <summary>Where checkpoints go (null: no checkpoints).</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Steps between checkpoints; 0 writes one at the end of each stage only. Default 0.</summary>
    public int CheckpointEvery { get; set; }

    /// <summary>Checkpoints kept in <see cref="CheckpointDirectory"/>. Default 2.</summary>
    public int KeepCheckpoints { get; set; } = Defaults.KeepCheckpoints;

    /// <summary>Continue from the latest checkpoint in <see cref="CheckpointDirectory"/> when there is one.</summary>
    public bool Resume { get; set; }

    /// <summary>Consecutive non-finite steps after which training stops with an error. Default 5.</summary>
    public int MaxConsecutiveBadSteps { get; set; } = Defaults.MaxConsecutiveBadSteps;

    /// <summary>
    /// The loss-spike rule (<see cref="LossSpikeRule"/>): a logged loss above <c>max(SpikeFactor × m, m + 1)</c>, m the
    /// median of the last <see cref="SpikeWindow"/> sane logged losses of the stage, is a spike; <see cref="SpikePatience"/>
    /// spikes in a row stop the run with a <see cref="TrainingDivergedException"/>, keeping the last checkpoint whose loss
    /// was seen sane. 0 turns the rule off. Default 3.
    /// </summary>
    public double SpikeFactor { get; set; } = Defaults.SpikeFactor;

    /// <summary>Logged losses in a row above the spike threshold that stop the run (see <see cref="SpikeFactor"/>). Default 3.</summary>
    public int SpikePatience { get; set; } = Defaults.SpikePatience;

    /// <summary>Sane logged losses whose median is the spike rule's baseline (see <see cref="SpikeFactor"/>). Default 20.</summary>
    public int SpikeWindow { get; set; } = Defaults.SpikeWindow;

    /// <summary>Receives progress reports.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>What cancellation does. Default: checkpoint and throw.</summary>
    public CancellationBehavior OnCancel { get; set; } = CancellationBehavior.CheckpointAndThrow;

    /// <summary>Seed for the objectives' local generators (rollout noise, exit sampling). Default 0.</summary>
    public long Seed { get; set; }

    /// <summary>Metadata carried into every checkpoint (tokenizer description, earlier stages).</summary>
    public ModelMeta? BaseMeta { get; set; }

    /// <summary>Checks every setting (the first problem of <see cref="Problems"/>); the one check of trainer options, which the CLI, hosting and ML.NET bind into.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range; the parameter name is the property's.</exception>
    /// <exception cref="ArgumentException"><see cref="Resume"/> without a <see cref="CheckpointDirectory"/>.</exception>
    public void Validate()
    {
        if (Problems().FirstOrDefault() is { } problem) throw problem;
    }

    /// <summary>Every setting out of range, each as the exception <see cref="Validate"/> would throw (parameter name: the property's).</summary>
    public IEnumerable<ArgumentException> Problems()
    {
        if (LogEvery < 1) yield return new ArgumentOutOfRangeException(nameof(LogEvery), LogEvery, "LogEvery must be at least 1.");
        if (CheckpointEvery < 0) yield return new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery, "CheckpointEvery must be non-negative.");
        if (KeepCheckpoints < 1) yield return new ArgumentOutOfRangeException(nameof(KeepCheckpoints), KeepCheckpoints, "KeepCheckpoints must be at least 1.");
        if (MaxConsecutiveBadSteps < 1) yield return new ArgumentOutOfRangeException(nameof(MaxConsecutiveBadSteps), MaxConsecutiveBadSteps, "MaxConsecutiveBadSteps must be at least 1.");
        if (!(SpikeFactor == 0 || (SpikeFactor > 1 && double.IsFinite(SpikeFactor))))
            yield return new ArgumentOutOfRangeException(nameof(SpikeFactor), SpikeFactor, "SpikeFactor must be 0 (rule off) or a finite number above 1.");
        if (SpikePatience < 1) yield return new ArgumentOutOfRangeException(nameof(SpikePatience), SpikePatience, "SpikePatience must be at least 1.");
        if (SpikeWindow < 1) yield return new ArgumentOutOfRangeException(nameof(SpikeWindow), SpikeWindow, "SpikeWindow must be at least 1.");
        if (Resume && CheckpointDirectory is null) yield return new ArgumentException("Resume needs a CheckpointDirectory.", nameof(Resume));
    }
}
