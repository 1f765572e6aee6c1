using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>
/// One stage of a training plan: an objective, its step budget and its optimizer settings. A stage whose objective is
/// a <see cref="LoopRptObjective"/> starts from <see cref="LoopRptDefaults"/> (the published LoopRPT settings), every
/// other stage from <see cref="Defaults"/>; settings given in the initializer override either.
/// </summary>
public sealed class TrainingStage
{
    /// <summary>Optimizer defaults of Stage I / Stage II and custom stages (nanoGPT-style pretraining settings).</summary>
    public static class Defaults
    {
        public const double LearningRate = 1e-3;
        public const double MinLearningRateRatio = 0.1;
        public const double WarmupFraction = 0.03;
        public const double WeightDecay = 0.1;
        public const double Beta1 = 0.9;
        public const double Beta2 = 0.95;
        public const double GradientClip = 1.0;
    }

    /// <summary>
    /// Optimizer defaults of a LoopRPT stage, the published settings (docs/method.md §4.9): AdamW with weight decay 0.01,
    /// cosine schedule with 3% warmup decaying to 0 (no floor is stated), gradient-norm clip 1.0. β2 is not stated:
    /// 0.95 as for pretraining. The learning rate is the published one for fine-tuning a pretrained Ouro; the CLI and the
    /// hosting options keep one learning-rate default for every stage (small models trained from scratch need more).
    /// Used by this class, the CLI's <c>--stages looprpt:...</c>, ML.NET's <c>StageDescriptor</c> and hosting's <c>StageOptions</c>.
    /// </summary>
    public static class LoopRptDefaults
    {
        public const double LearningRate = 5e-6;
        public const double MinLearningRateRatio = 0.0;
        public const double WarmupFraction = 0.03;
        public const double WeightDecay = 0.01;
        public const double Beta1 = Defaults.Beta1;
        public const double Beta2 = Defaults.Beta2;
        public const double GradientClip = 1.0;
    }

    /// <summary>A stage of <paramref name="steps"/> optimizer steps; optimizer settings start from the defaults of the objective's kind.</summary>
    public TrainingStage(ITrainingObjective objective, long steps)
    {
        Objective = objective ?? throw new ArgumentNullException(nameof(objective));
        Steps = steps;
        var d = DefaultsFor(loopRpt: objective is LoopRptObjective);
        (MinLearningRateRatio, WarmupFraction, WeightDecay, Beta1, Beta2, GradientClip) =
            (d.MinLearningRateRatio, d.WarmupFraction, d.WeightDecay, d.Beta1, d.Beta2, d.GradientClip);
    }

    /// <summary>
    /// The optimizer defaults (all but the learning rate) of a LoopRPT stage (<see cref="LoopRptDefaults"/>) or of any
    /// other (<see cref="Defaults"/>). The CLI, ML.NET and hosting surfaces read per-kind defaults from
    /// <see cref="ObjectiveKindRegistry"/>, whose built-in kinds carry these.
    /// </summary>
    public static OptimizerDefaults DefaultsFor(bool loopRpt) => loopRpt ? OptimizerDefaults.LoopRpt : OptimizerDefaults.Pretraining;

    /// <summary>A set of optimizer defaults (see <see cref="DefaultsFor"/>).</summary>
    public sealed record OptimizerDefaults(double MinLearningRateRatio, double WarmupFraction, double WeightDecay, double Beta1, double Beta2, double GradientClip)
    {
        /// <summary><see cref="TrainingStage.Defaults"/>.</summary>
        public static OptimizerDefaults Pretraining { get; } = new(Defaults.MinLearningRateRatio, Defaults.WarmupFraction, Defaults.WeightDecay,
                                                                    Defaults.Beta1, Defaults.Beta2, Defaults.GradientClip);

        /// <summary><see cref="TrainingStage.LoopRptDefaults"/>.</summary>
        public static OptimizerDefaults LoopRpt { get; } = new(LoopRptDefaults.MinLearningRateRatio, LoopRptDefaults.WarmupFraction, LoopRptDefaults.WeightDecay,
                                                                LoopRptDefaults.Beta1, LoopRptDefaults.Beta2, LoopRptDefaults.GradientClip);
    }

    public ITrainingObjective Objective { get; }

    /// <summary>Optimizer steps in this stage.</summary>
    public long Steps { get; }

    /// <summary>Peak learning rate. Default 1e-3 (small models from scratch; LoopRPT on a real Ouro uses 5e-6).</summary>
    public double LearningRate { get; init; } = Defaults.LearningRate;

    /// <summary>Final rate of the cosine decay as a fraction of the peak. Default 0.1 (LoopRPT: 0).</summary>
    public double MinLearningRateRatio { get; init; }

    /// <summary>Fraction of the stage's steps spent in linear warmup. Default 0.03 (LoopRPT too).</summary>
    public double WarmupFraction { get; init; }

    /// <summary>Decoupled weight decay on matrices. Default 0.1 (LoopRPT: 0.01).</summary>
    public double WeightDecay { get; init; }

    /// <summary>AdamW β1. Default 0.9.</summary>
    public double Beta1 { get; init; }

    /// <summary>AdamW β2. Default 0.95 (LoopRPT too: the paper does not state it).</summary>
    public double Beta2 { get; init; }

    /// <summary>Gradient-norm clip; 0 disables clipping (the norm is still computed to detect non-finite gradients). Default 1.0 (LoopRPT too).</summary>
    public double GradientClip { get; init; }

    /// <summary>Micro-batches per optimizer step. Default 1.</summary>
    public int GradientAccumulation { get; init; } = 1;

    internal void Validate()
    {
        if (Steps < 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, $"Stage '{Objective.Name}': steps must be non-negative.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, $"Stage '{Objective.Name}': the learning rate must be positive and finite.");
        if (!(MinLearningRateRatio is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(MinLearningRateRatio), MinLearningRateRatio, "MinLearningRateRatio must lie in [0, 1].");
        if (!(WarmupFraction is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(WarmupFraction), WarmupFraction, "WarmupFraction must lie in [0, 1).");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be non-negative.");
        if (!(Beta1 is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "Beta1 must lie in [0, 1).");
        if (!(Beta2 is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "Beta2 must lie in [0, 1).");
        if (!(GradientClip >= 0)) throw new ArgumentOutOfRangeException(nameof(GradientClip), GradientClip, "GradientClip must be non-negative.");
        if (GradientAccumulation < 1) throw new ArgumentOutOfRangeException(nameof(GradientAccumulation), GradientAccumulation, "GradientAccumulation must be at least 1.");
    }
}
