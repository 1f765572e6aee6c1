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
    /// <summary>LoopRPT reinforcement pre-training (<see cref="LoopRptObjective"/>, built in; options: <see cref="LoopRptOptions"/>).</summary>
    LoopRpt,
    /// <summary>
    /// A kind registered in <see cref="LoopedLmTrainerEstimator.Options.ObjectiveKinds"/> (named by <see cref="StageDescriptor.CustomKind"/>),
    /// or any objective created by <see cref="LoopedLmTrainerEstimator.Options.ObjectiveFactory"/>.
    /// </summary>
    Custom,
}

/// <summary>One stage of the training plan, in ML.NET options form (turned into a <see cref="TrainingStage"/> at fit time).</summary>
public sealed class StageDescriptor
{
    /// <summary>The objective kind.</summary>
    public StageKind Kind { get; set; }

    /// <summary>Optimizer steps; 0 with <see cref="Epochs"/> set derives the steps from the data size.</summary>
    public long Steps { get; set; }

    /// <summary>Passes over the data (overrides <see cref="Steps"/> when set; costs one counting pass over the data).</summary>
    public double? Epochs { get; set; }

    // Settings left unset take the defaults of the stage's kind when read (ObjectiveKindRegistry), so a LoopRpt stage
    // gets the published LoopRPT settings however it was created (factory or object initializer, Kind set before or after).
    // They stay unset in ToDefinition: a registered CustomKind applies its own defaults when the stage is built (the getters
    // know only the built-in kinds and report the pretraining defaults for it).
    private double? _minLearningRateRatio, _warmupFraction, _weightDecay, _gradientClip;

    private TrainingStage.OptimizerDefaults KindDefaults => ObjectiveKindRegistry.BuiltIn.OptimizerDefaultsOf(KindName);

    /// <summary>Peak learning rate (warmup then cosine decay). Default 1e-3; <see cref="LoopRpt"/> stages made by the factory: 5e-6.</summary>
    public double LearningRate { get; set; } = TrainingStage.Defaults.LearningRate;
    /// <summary>Final rate of the cosine decay as a fraction of the peak. Default 0.1; LoopRpt stages 0 (published).</summary>
    public double MinLearningRateRatio { get => _minLearningRateRatio ?? KindDefaults.MinLearningRateRatio; set => _minLearningRateRatio = value; }
    /// <summary>Fraction of the stage spent in linear warmup. Default 0.03 (LoopRpt stages too, published).</summary>
    public double WarmupFraction { get => _warmupFraction ?? KindDefaults.WarmupFraction; set => _warmupFraction = value; }
    /// <summary>Decoupled weight decay on matrices. Default 0.1; LoopRpt stages 0.01 (published).</summary>
    public double WeightDecay { get => _weightDecay ?? KindDefaults.WeightDecay; set => _weightDecay = value; }
    /// <summary>Gradient-norm clip (0: none). Default 1.0 (LoopRpt stages too, published).</summary>
    public double GradientClip { get => _gradientClip ?? KindDefaults.GradientClip; set => _gradientClip = value; }
    /// <summary>Micro-batches per optimizer step.</summary>
    public int GradientAccumulation { get; set; } = 1;

    /// <summary>
    /// Objective options of the stage's kind: <see cref="PretrainObjectiveOptions"/> (Pretrain), <see cref="GateObjectiveOptions"/>
    /// (Gate), <see cref="LoopRptOptions"/> (LoopRpt), the options type of a registered <see cref="CustomKind"/>, or anything a
    /// custom factory reads (Custom, or a stage the factory creates); null: the kind's defaults. Options of another type for a
    /// built-in or registered kind are an <see cref="ArgumentException"/>.
    /// </summary>
    public object? ObjectiveOptions { get; set; }

    /// <summary>
    /// The name of the <see cref="LoopedLmTrainerEstimator.Options.ObjectiveKinds"/> kind a <see cref="StageKind.Custom"/> stage
    /// runs (its <see cref="ObjectiveOptions"/> are then of that kind's options type); null: the stage's objective comes from
    /// <see cref="LoopedLmTrainerEstimator.Options.ObjectiveFactory"/>.
    /// </summary>
    public string? CustomKind { get; set; }

    /// <summary>The kind's name in an <see cref="ObjectiveKindRegistry"/> (null: a Custom stage without <see cref="CustomKind"/>).</summary>
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
        Kind = KindName ?? nameof(StageKind.Custom), Steps = steps, LearningRate = LearningRate, MinLearningRateRatio = _minLearningRateRatio,
        WarmupFraction = _warmupFraction, WeightDecay = _weightDecay, GradientClip = _gradientClip, GradientAccumulation = GradientAccumulation,
        ObjectiveOptions = ObjectiveOptions,
    };

    /// <summary>Stage I pretraining.</summary>
    public static StageDescriptor Pretrain(long steps, double learningRate = TrainingStage.Defaults.LearningRate)
        => new() { Kind = StageKind.Pretrain, Steps = steps, LearningRate = learningRate };

    /// <summary>Stage II gate training.</summary>
    public static StageDescriptor Gate(long steps, double learningRate = TrainingStage.Defaults.LearningRate)
        => new() { Kind = StageKind.Gate, Steps = steps, LearningRate = learningRate };

    /// <summary>
    /// LoopRPT (docs/method.md §4) with the published optimizer settings (<see cref="TrainingStage.LoopRptDefaults"/>:
    /// weight decay 0.01, 3% warmup, cosine to 0, clip 1.0); the paper's rate on a real Ouro is 5e-6.
    /// </summary>
    public static StageDescriptor LoopRpt(long steps, double learningRate = TrainingStage.LoopRptDefaults.LearningRate, LoopRptOptions? options = null)
        => new() { Kind = StageKind.LoopRpt, Steps = steps, LearningRate = learningRate, ObjectiveOptions = options };

    internal StageDescriptor Clone() => (StageDescriptor)MemberwiseClone();

    /// <inheritdoc/>
    public override string ToString() => $"{CustomKind ?? Kind.ToString()}:{Steps}";
}
