using LoopRpt.Checkpoints;

namespace LoopRpt.Training;

/// <summary>Options of <see cref="LoopedLmTrainer"/> that apply to every stage.</summary>
public sealed class TrainerOptions
{
    public static class Defaults
    {
        public const int LogEvery = 10;
        public const int KeepCheckpoints = 2;
        public const int MaxConsecutiveBadSteps = 5;
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

    /// <summary>Receives progress reports.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>What cancellation does. Default: checkpoint and throw.</summary>
    public CancellationBehavior OnCancel { get; set; } = CancellationBehavior.CheckpointAndThrow;

    /// <summary>Seed for the objectives' local generators (rollout noise, exit sampling). Default 0.</summary>
    public long Seed { get; set; }

    /// <summary>Metadata carried into every checkpoint (tokenizer description, earlier stages).</summary>
    public ModelMeta? BaseMeta { get; set; }

    internal void Validate()
    {
        if (LogEvery < 1) throw new ArgumentOutOfRangeException(nameof(LogEvery), LogEvery, "LogEvery must be at least 1.");
        if (CheckpointEvery < 0) throw new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery, "CheckpointEvery must be non-negative.");
        if (KeepCheckpoints < 1) throw new ArgumentOutOfRangeException(nameof(KeepCheckpoints), KeepCheckpoints, "KeepCheckpoints must be at least 1.");
        if (MaxConsecutiveBadSteps < 1) throw new ArgumentOutOfRangeException(nameof(MaxConsecutiveBadSteps), MaxConsecutiveBadSteps, "MaxConsecutiveBadSteps must be at least 1.");
        if (Resume && CheckpointDirectory is null) throw new ArgumentException("Resume needs a CheckpointDirectory.", nameof(Resume));
    }
}
