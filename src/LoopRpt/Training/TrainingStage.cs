using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>One stage of a training plan: an objective, its step budget and its optimizer settings.</summary>
public sealed class TrainingStage
{
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

    public TrainingStage(ITrainingObjective objective, long steps)
    {
        Objective = objective ?? throw new ArgumentNullException(nameof(objective));
        Steps = steps;
    }

    public ITrainingObjective Objective { get; }

    /// <summary>Optimizer steps in this stage.</summary>
    public long Steps { get; }

    /// <summary>Peak learning rate. Default 1e-3 (small models from scratch; LoopRPT on a real Ouro uses 5e-6).</summary>
    public double LearningRate { get; init; } = Defaults.LearningRate;

    /// <summary>Final rate of the cosine decay as a fraction of the peak. Default 0.1.</summary>
    public double MinLearningRateRatio { get; init; } = Defaults.MinLearningRateRatio;

    /// <summary>Fraction of the stage's steps spent in linear warmup. Default 0.03.</summary>
    public double WarmupFraction { get; init; } = Defaults.WarmupFraction;

    /// <summary>Decoupled weight decay on matrices. Default 0.1.</summary>
    public double WeightDecay { get; init; } = Defaults.WeightDecay;

    public double Beta1 { get; init; } = Defaults.Beta1;

    public double Beta2 { get; init; } = Defaults.Beta2;

    /// <summary>Gradient-norm clip; 0 disables clipping (the norm is still computed to detect non-finite gradients). Default 1.0.</summary>
    public double GradientClip { get; init; } = Defaults.GradientClip;

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
