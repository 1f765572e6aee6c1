namespace LoopRpt.Training;

/// <summary>
/// The optimizer settings a stage of one objective kind takes when it gives none: one table per kind, held by its
/// <see cref="ObjectiveKind"/> and read by <see cref="TrainingStage"/> and <see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/>
/// (so the library, the CLI, hosting and ML.NET agree). <see cref="Pretraining"/> serves Stage I and Stage II,
/// <see cref="LoopRpt"/> is the published LoopRPT table.
/// </summary>
/// <param name="LearningRate">Peak learning rate (linear warmup, then cosine decay).</param>
/// <param name="MinLearningRateRatio">Final rate of the cosine decay as a fraction of the peak.</param>
/// <param name="WarmupFraction">Fraction of the stage's steps spent in linear warmup.</param>
/// <param name="WeightDecay">AdamW decoupled weight decay on matrices.</param>
/// <param name="Beta1">AdamW β1.</param>
/// <param name="Beta2">AdamW β2.</param>
/// <param name="GradientClip">Gradient-norm clip; 0 disables clipping.</param>
/// <param name="GradientAccumulation">Micro-batches per optimizer step.</param>
public sealed record OptimizerDefaults(double LearningRate, double MinLearningRateRatio, double WarmupFraction, double WeightDecay,
                                       double Beta1, double Beta2, double GradientClip, int GradientAccumulation = 1)
{
    /// <summary>
    /// Ouro Stage I / Stage II and custom kinds (nanoGPT-style settings for small models trained from scratch): lr 1e-3,
    /// cosine to 0.1 × the peak after 3 % warmup, weight decay 0.1, β 0.9 / 0.95, clip 1.0.
    /// </summary>
    public static OptimizerDefaults Pretraining { get; } = new(
        LearningRate: 1e-3, MinLearningRateRatio: 0.1, WarmupFraction: 0.03, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, GradientClip: 1.0);

    /// <summary>
    /// LoopRPT, the published settings (docs/method.md §4.9): lr 5e-6 (for fine-tuning a pretrained Ouro), cosine decaying
    /// to 0 (no floor is stated) after 3 % warmup, weight decay 0.01, betas (0.9, 0.999) (torch's defaults in the authors'
    /// code; eps 1e-8 is <see cref="AdamW"/>'s), clip 1.0.
    /// </summary>
    public static OptimizerDefaults LoopRpt { get; } = new(
        LearningRate: 5e-6, MinLearningRateRatio: 0.0, WarmupFraction: 0.03, WeightDecay: 0.01, Beta1: 0.9, Beta2: 0.999, GradientClip: 1.0);

    /// <summary>
    /// A stage of <paramref name="kind"/> and <paramref name="steps"/> steps with every optimizer setting given as here: what
    /// <see cref="StageDefinition.Validate"/> checks, and what pins a stage's settings whatever its kind's defaults.
    /// </summary>
    public StageDefinition ToDefinition(string kind, long steps) => new()
    {
        Kind = kind, Steps = steps, LearningRate = LearningRate, MinLearningRateRatio = MinLearningRateRatio, WarmupFraction = WarmupFraction,
        WeightDecay = WeightDecay, Beta1 = Beta1, Beta2 = Beta2, GradientClip = GradientClip, GradientAccumulation = GradientAccumulation,
    };
}
