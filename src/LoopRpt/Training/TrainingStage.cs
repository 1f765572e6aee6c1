using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>
/// One stage of a training plan: an objective, its step budget and its optimizer settings. The settings start from the
/// <see cref="OptimizerDefaults"/> of the objective's kind (a <see cref="LoopRptObjective"/> the published LoopRPT table,
/// any other the pretraining one); settings given in the initializer override them. Checked by
/// <see cref="StageDefinition.Validate"/> when the trainer starts.
/// </summary>
public sealed class TrainingStage
{
    /// <summary>
    /// A stage of <paramref name="steps"/> optimizer steps; optimizer settings start from the defaults of the objective's
    /// kind in <see cref="ObjectiveKindRegistry.BuiltIn"/> (by <see cref="ITrainingObjective.Name"/>; an unknown name: the pretraining table).
    /// </summary>
    public TrainingStage(ITrainingObjective objective, long steps)
        : this(objective, steps, ObjectiveKindRegistry.BuiltIn.OptimizerDefaultsOf(objective?.Name))
    {
    }

    /// <summary>A stage of <paramref name="steps"/> optimizer steps whose optimizer settings start from <paramref name="defaults"/>.</summary>
    public TrainingStage(ITrainingObjective objective, long steps, OptimizerDefaults defaults)
    {
        Objective = objective ?? throw new ArgumentNullException(nameof(objective));
        ArgumentNullException.ThrowIfNull(defaults);
        Steps = steps;
        (LearningRate, MinLearningRateRatio, WarmupFraction, WeightDecay, Beta1, Beta2, GradientClip, GradientAccumulation) = defaults;
    }

    /// <summary>The objective this stage trains.</summary>
    public ITrainingObjective Objective { get; }

    /// <summary>Optimizer steps in this stage.</summary>
    public long Steps { get; }

    /// <summary>Peak learning rate (<see cref="OptimizerDefaults.LearningRate"/>).</summary>
    public double LearningRate { get; init; }

    /// <summary>Final rate of the cosine decay as a fraction of the peak (<see cref="OptimizerDefaults.MinLearningRateRatio"/>).</summary>
    public double MinLearningRateRatio { get; init; }

    /// <summary>Fraction of the stage's steps spent in linear warmup (<see cref="OptimizerDefaults.WarmupFraction"/>).</summary>
    public double WarmupFraction { get; init; }

    /// <summary>Decoupled weight decay on matrices (<see cref="OptimizerDefaults.WeightDecay"/>).</summary>
    public double WeightDecay { get; init; }

    /// <summary>AdamW β1 (<see cref="OptimizerDefaults.Beta1"/>).</summary>
    public double Beta1 { get; init; }

    /// <summary>AdamW β2 (<see cref="OptimizerDefaults.Beta2"/>).</summary>
    public double Beta2 { get; init; }

    /// <summary>Gradient-norm clip; 0 disables clipping (the norm is still computed to detect non-finite gradients) (<see cref="OptimizerDefaults.GradientClip"/>).</summary>
    public double GradientClip { get; init; }

    /// <summary>Micro-batches per optimizer step (<see cref="OptimizerDefaults.GradientAccumulation"/>).</summary>
    public int GradientAccumulation { get; init; }

    /// <summary>This stage's optimizer settings as one table.</summary>
    public OptimizerDefaults Optimizer => new(LearningRate, MinLearningRateRatio, WarmupFraction, WeightDecay, Beta1, Beta2, GradientClip, GradientAccumulation);

    /// <summary>This stage in the plan form, every setting given (what <see cref="Validate"/> checks).</summary>
    public StageDefinition ToDefinition() => Optimizer.ToDefinition(Objective.Name, Steps);

    /// <summary>
    /// Stop the stage when held-out loss stops improving (<see cref="HeldOutPlateau"/>; its <see cref="PlateauRule.MaxSteps"/>
    /// must equal <see cref="Steps"/>), keeping the best weights. Null (default): run all <see cref="Steps"/>. Such a stage
    /// must be the plan's last and is not resumable (<see cref="TrainerOptions.Resume"/> is refused).
    /// </summary>
    public HeldOutPlateau? StopOnPlateau { get; init; }

    internal void Validate()
    {
        ToDefinition().Validate($"Stage '{Objective.Name}'");
        StopOnPlateau?.Validate(Steps);
    }
}
