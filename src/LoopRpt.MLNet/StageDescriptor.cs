using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRpt.MLNet;

/// <summary>The kind of a training stage.</summary>
public enum StageKind
{
    /// <summary>Ouro Stage I: next-token loss at every loop + entropy-regularized exit distribution (<see cref="PretrainObjective"/>).</summary>
    Pretrain,
    /// <summary>Ouro Stage II: exit-gate training on a frozen LM (<see cref="GateObjective"/>).</summary>
    Gate,
    /// <summary>LoopRPT reinforcement pre-training (<see cref="LoopRptObjective"/>, built in; options: <see cref="LoopRptObjectiveOptions"/>).</summary>
    LoopRpt,
    /// <summary>A kind registered in <see cref="LoopedLmTrainerEstimator.Options.ObjectiveKinds"/>, named by <see cref="StageDescriptor.CustomKind"/>.</summary>
    Custom,
}

/// <summary>
/// One stage of the training plan, in ML.NET options form: bound into the core's <see cref="StageDefinition"/> and resolved by
/// <see cref="LoopedLmTrainerEstimator.Options.ObjectiveKinds"/> at fit time. Optimizer settings left unset read as (and
/// train with) the defaults of the stage's kind (<see cref="OptimizerDefaults"/>): a LoopRpt stage gets the published LoopRPT
/// settings however it was created (factory or object initializer, Kind set before or after).
/// </summary>
public sealed class StageDescriptor
{
    /// <summary>The objective kind.</summary>
    public StageKind Kind { get; set; }

    /// <summary>Optimizer steps; 0 with <see cref="Epochs"/> set derives the steps from the data size.</summary>
    public long Steps { get; set; }

    /// <summary>Passes over the data (overrides <see cref="Steps"/> when set; costs one counting pass over the data).</summary>
    public double? Epochs { get; set; }

    // Unset settings stay null in ToDefinition, so a registered CustomKind applies its own defaults when the stage is built
    // (the getters know only the built-in kinds and report the pretraining defaults for it).
    private double? _learningRate, _minLearningRateRatio, _warmupFraction, _weightDecay, _beta1, _beta2, _gradientClip;
    private int? _gradientAccumulation;

    private OptimizerDefaults KindDefaults => ObjectiveKindRegistry.BuiltIn.OptimizerDefaultsOf(KindName);

    /// <summary>Peak learning rate (warmup then cosine decay). Default: the kind's, 1e-3; LoopRpt stages 5e-6 (published).</summary>
    public double LearningRate { get => _learningRate ?? KindDefaults.LearningRate; set => _learningRate = value; }
    /// <summary>Final rate of the cosine decay as a fraction of the peak. Default 0.1; LoopRpt stages 0 (published).</summary>
    public double MinLearningRateRatio { get => _minLearningRateRatio ?? KindDefaults.MinLearningRateRatio; set => _minLearningRateRatio = value; }
    /// <summary>Fraction of the stage spent in linear warmup. Default 0.03 (LoopRpt stages too, published).</summary>
    public double WarmupFraction { get => _warmupFraction ?? KindDefaults.WarmupFraction; set => _warmupFraction = value; }
    /// <summary>Decoupled weight decay on matrices. Default 0.1; LoopRpt stages 0.01 (published).</summary>
    public double WeightDecay { get => _weightDecay ?? KindDefaults.WeightDecay; set => _weightDecay = value; }
    /// <summary>AdamW β1. Default 0.9.</summary>
    public double Beta1 { get => _beta1 ?? KindDefaults.Beta1; set => _beta1 = value; }
    /// <summary>AdamW β2. Default 0.95 (LoopRpt stages too; not stated in the paper).</summary>
    public double Beta2 { get => _beta2 ?? KindDefaults.Beta2; set => _beta2 = value; }
    /// <summary>Gradient-norm clip (0: none). Default 1.0 (LoopRpt stages too, published).</summary>
    public double GradientClip { get => _gradientClip ?? KindDefaults.GradientClip; set => _gradientClip = value; }
    /// <summary>Micro-batches per optimizer step. Default 1.</summary>
    public int GradientAccumulation { get => _gradientAccumulation ?? KindDefaults.GradientAccumulation; set => _gradientAccumulation = value; }

    /// <summary>
    /// Objective options of the stage's kind: <see cref="PretrainObjectiveOptions"/> (Pretrain), <see cref="GateObjectiveOptions"/>
    /// (Gate), <see cref="LoopRptObjectiveOptions"/> (LoopRpt) or the options type of the registered <see cref="CustomKind"/>; null: the
    /// kind's defaults. Options of another type are an <see cref="ArgumentException"/>.
    /// </summary>
    public object? ObjectiveOptions { get; set; }

    /// <summary>
    /// The name of the <see cref="LoopedLmTrainerEstimator.Options.ObjectiveKinds"/> kind a <see cref="StageKind.Custom"/> stage
    /// runs (its <see cref="ObjectiveOptions"/> are then of that kind's options type); required for a Custom stage.
    /// </summary>
    public string? CustomKind { get; set; }

    /// <summary>The kind's name in an <see cref="ObjectiveKindRegistry"/> (null: a Custom stage without <see cref="CustomKind"/>, an error).</summary>
    internal string? KindName => Kind switch
    {
        StageKind.Pretrain => ObjectiveKindRegistry.Pretrain,
        StageKind.Gate => ObjectiveKindRegistry.Gate,
        StageKind.LoopRpt => ObjectiveKindRegistry.LoopRpt,
        _ => CustomKind,
    };

    /// <summary>The stage in the core plan form, <paramref name="steps"/> optimizer steps (those <see cref="Epochs"/> come to, if set).</summary>
    internal StageDefinition ToDefinition(long steps) => new()
    {
        Kind = KindName ?? nameof(StageKind.Custom), Steps = steps, LearningRate = _learningRate, MinLearningRateRatio = _minLearningRateRatio,
        WarmupFraction = _warmupFraction, WeightDecay = _weightDecay, Beta1 = _beta1, Beta2 = _beta2, GradientClip = _gradientClip,
        GradientAccumulation = _gradientAccumulation, ObjectiveOptions = ObjectiveOptions,
    };

    /// <summary>Stage I pretraining; <paramref name="learningRate"/> null: the kind's default.</summary>
    public static StageDescriptor Pretrain(long steps, double? learningRate = null)
        => new() { Kind = StageKind.Pretrain, Steps = steps, _learningRate = learningRate };

    /// <summary>Stage II gate training; <paramref name="learningRate"/> null: the kind's default.</summary>
    public static StageDescriptor Gate(long steps, double? learningRate = null)
        => new() { Kind = StageKind.Gate, Steps = steps, _learningRate = learningRate };

    /// <summary>
    /// LoopRPT with the published optimizer settings (<see cref="OptimizerDefaults.LoopRpt"/>: lr 5e-6, weight decay 0.01,
    /// 3 % warmup, cosine to 0, clip 1.0); <paramref name="learningRate"/> null: the published 5e-6.
    /// </summary>
    public static StageDescriptor LoopRpt(long steps, double? learningRate = null, LoopRptObjectiveOptions? options = null)
        => new() { Kind = StageKind.LoopRpt, Steps = steps, _learningRate = learningRate, ObjectiveOptions = options };

    internal StageDescriptor Clone() => (StageDescriptor)MemberwiseClone();

    /// <inheritdoc/>
    public override string ToString() => $"{CustomKind ?? Kind.ToString()}:{Steps}";
}
