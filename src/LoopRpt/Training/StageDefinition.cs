namespace LoopRpt.Training;

/// <summary>
/// One stage of a training plan as the surfaces describe it — a kind name, a step budget, optimizer settings where given
/// and the objective's options — before <see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/> resolves
/// it into a <see cref="TrainingStage"/>. The CLI's <c>--stages</c>, hosting's <c>StageOptions</c> and ML.NET's
/// <c>StageDescriptor</c> all map to this, so the three cannot disagree on defaults or options.
/// </summary>
public sealed record StageDefinition
{
    /// <summary>The stage's kind, a name in the registry (<c>pretrain</c>, <c>gate</c>, <c>looprpt</c>, or a registered one).</summary>
    public required string Kind { get; init; }

    /// <summary>Optimizer steps of the stage.</summary>
    public long Steps { get; init; }

    /// <summary>Peak learning rate; null: <see cref="TrainingStage.Defaults.LearningRate"/>.</summary>
    public double? LearningRate { get; init; }

    /// <summary>Final rate of the cosine decay as a fraction of the peak; null: the kind's default.</summary>
    public double? MinLearningRateRatio { get; init; }

    /// <summary>Fraction of the stage spent in linear warmup; null: the kind's default.</summary>
    public double? WarmupFraction { get; init; }

    /// <summary>Decoupled weight decay on matrices; null: the kind's default.</summary>
    public double? WeightDecay { get; init; }

    /// <summary>AdamW β1; null: the kind's default.</summary>
    public double? Beta1 { get; init; }

    /// <summary>AdamW β2; null: the kind's default.</summary>
    public double? Beta2 { get; init; }

    /// <summary>Gradient-norm clip (0: none); null: the kind's default.</summary>
    public double? GradientClip { get; init; }

    /// <summary>Micro-batches per optimizer step. Default 1.</summary>
    public int GradientAccumulation { get; init; } = 1;

    /// <summary>The objective's options, of the kind's <see cref="ObjectiveKind.OptionsType"/>; null: bound from <see cref="Parameters"/>.</summary>
    public object? ObjectiveOptions { get; init; }

    /// <summary>The objective's options as named text values (<see cref="ObjectiveKind.BindOptions"/>); null or empty: the defaults.</summary>
    public IReadOnlyDictionary<string, string>? Parameters { get; init; }
}
