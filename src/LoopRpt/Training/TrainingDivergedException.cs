namespace LoopRpt.Training;

/// <summary>Which guard of <see cref="LoopedLmTrainer"/> stopped a run.</summary>
public enum DivergenceKind
{
    /// <summary><see cref="TrainerOptions.MaxConsecutiveBadSteps"/> steps in a row had a non-finite loss or gradient.</summary>
    NonFinite,
    /// <summary>The logged loss stayed far above its running median (<see cref="LossSpikeRule"/>).</summary>
    LossSpike,
}

/// <summary>
/// Training stopped because it diverged. Checkpoints written after the last one whose loss was seen sane were removed
/// and the checkpoint folder's <c>latest</c> names <see cref="LastGoodCheckpoint"/> again, so a resume starts
/// from a sane state. An <see cref="InvalidOperationException"/>, as the non-finite guard always threw.
/// </summary>
public sealed class TrainingDivergedException(string message, DivergenceKind kind, string stage, long stageStep, long globalStep,
                                              string? lastGoodCheckpoint, int removedCheckpoints)
    : InvalidOperationException(message)
{
    public DivergenceKind Kind { get; } = kind;

    /// <summary>The objective name of the stage that diverged.</summary>
    public string Stage { get; } = stage;

    /// <summary>Completed steps of that stage when training stopped.</summary>
    public long StageStep { get; } = stageStep;

    public long GlobalStep { get; } = globalStep;

    /// <summary>The checkpoint kept as the last sane state; null when this run wrote none (or had no checkpoint folder).</summary>
    public string? LastGoodCheckpoint { get; } = lastGoodCheckpoint;

    /// <summary>Checkpoints of this run removed because the loss after them was not sane.</summary>
    public int RemovedCheckpoints { get; } = removedCheckpoints;
}
