using System.Globalization;

namespace LoopRpt.Training;

/// <summary>
/// One stage of a training plan as the surfaces describe it — a kind name, a step budget, optimizer settings where given
/// and the objective's options — before <see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/> resolves
/// it into a <see cref="TrainingStage"/>. The CLI's <c>--stages</c> and ML.NET's <c>StageDescriptor</c> only bind into
/// this, and hosting's configuration binds straight into it (<c>RetrainingOptions.Stages</c>: the keys are the property
/// names); settings left null take the <see cref="OptimizerDefaults"/> of the kind, and <see cref="Validate"/> is the one
/// check of a stage's settings.
/// </summary>
public sealed record StageDefinition
{
    /// <summary>The stage's kind, a name in the registry (<c>pretrain</c>, <c>gate</c>, <c>looprpt</c>, or a registered one). Default <c>pretrain</c>.</summary>
    public string Kind { get; init; } = ObjectiveKindRegistry.Pretrain;

    /// <summary>Optimizer steps of the stage.</summary>
    public long Steps { get; init; }

    /// <summary>Peak learning rate; null: the kind's default (<see cref="OptimizerDefaults.LearningRate"/>).</summary>
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

    /// <summary>Micro-batches per optimizer step; null: the kind's default (1).</summary>
    public int? GradientAccumulation { get; init; }

    /// <summary>The objective's options, of the kind's <see cref="ObjectiveKind.OptionsType"/>; null: bound from <see cref="Parameters"/>.</summary>
    public object? ObjectiveOptions { get; init; }

    /// <summary>The objective's options as named text values (<see cref="ObjectiveKind.BindOptions"/>); null or empty: the defaults.</summary>
    public IReadOnlyDictionary<string, string>? Parameters { get; init; }

    /// <summary>The optimizer settings by property name, as <see cref="WithSetting"/> takes them.</summary>
    public static IReadOnlyList<string> OptimizerSettingNames { get; } =
        [nameof(LearningRate), nameof(MinLearningRateRatio), nameof(WarmupFraction), nameof(WeightDecay), nameof(Beta1), nameof(Beta2), nameof(GradientClip), nameof(GradientAccumulation)];

    /// <summary>
    /// A copy with the optimizer setting <paramref name="name"/> (one of <see cref="OptimizerSettingNames"/>, case-insensitive)
    /// set from invariant-culture text, e.g. a command line's <c>Beta2=0.99</c>; null when <paramref name="name"/> is not
    /// an optimizer setting (an objective option, then). The value's range is checked by <see cref="Validate"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The text is not a number (an integer for <see cref="GradientAccumulation"/>).</exception>
    public StageDefinition? WithSetting(string name, string text, string? stage = null)
    {
        var setting = OptimizerSettingNames.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
        if (setting is null) return null;
        text = text.Trim();
        if (setting == nameof(GradientAccumulation))
            return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? this with { GradientAccumulation = n }
                : throw new ArgumentException(ObjectiveKind.Say(stage, $"parameter '{setting}' must be an integer; got '{text}'."), nameof(Parameters));
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
            throw new ArgumentException(ObjectiveKind.Say(stage, $"parameter '{setting}' must be a number; got '{text}'."), nameof(Parameters));
        return setting switch
        {
            nameof(LearningRate) => this with { LearningRate = v },
            nameof(MinLearningRateRatio) => this with { MinLearningRateRatio = v },
            nameof(WarmupFraction) => this with { WarmupFraction = v },
            nameof(WeightDecay) => this with { WeightDecay = v },
            nameof(Beta1) => this with { Beta1 = v },
            nameof(Beta2) => this with { Beta2 = v },
            _ => this with { GradientClip = v },
        };
    }

    /// <summary>
    /// Checks the step count and every optimizer setting that is given; <paramref name="stage"/> (e.g. <c>Stages[1] (gate)</c>)
    /// starts the message. The parameter name is the property's.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range.</exception>
    public void Validate(string? stage = null)
    {
        static bool Finite(double? v) => v is null || double.IsFinite(v.Value);
        Check(Steps >= 0, nameof(Steps), Steps, "Steps must be non-negative.");
        Check(LearningRate is null or > 0 && Finite(LearningRate), nameof(LearningRate), LearningRate, "LearningRate must be positive and finite.");
        Check(MinLearningRateRatio is null or (>= 0 and <= 1), nameof(MinLearningRateRatio), MinLearningRateRatio, "MinLearningRateRatio must lie in [0, 1].");
        Check(WarmupFraction is null or (>= 0 and < 1), nameof(WarmupFraction), WarmupFraction, "WarmupFraction must lie in [0, 1).");
        Check(WeightDecay is null or >= 0 && Finite(WeightDecay), nameof(WeightDecay), WeightDecay, "WeightDecay must be non-negative and finite.");
        Check(Beta1 is null or (>= 0 and < 1), nameof(Beta1), Beta1, "Beta1 must lie in [0, 1).");
        Check(Beta2 is null or (>= 0 and < 1), nameof(Beta2), Beta2, "Beta2 must lie in [0, 1).");
        Check(GradientClip is null or >= 0 && Finite(GradientClip), nameof(GradientClip), GradientClip, "GradientClip must be non-negative and finite.");
        Check(GradientAccumulation is null or >= 1, nameof(GradientAccumulation), GradientAccumulation, "GradientAccumulation must be at least 1.");

        void Check(bool ok, string name, object? value, string message)
        {
            if (!ok) throw new ArgumentOutOfRangeException(name, value, ObjectiveKind.Say(stage, message));
        }
    }
}
