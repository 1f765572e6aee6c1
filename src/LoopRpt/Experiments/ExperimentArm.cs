using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Objectives;

namespace LoopRpt.Experiments;

/// <summary>What an arm trains.</summary>
public enum ArmKind
{
    /// <summary>(a) Ouro Stage I continuation, as many optimizer steps as LoopRPT: the equal-steps (and equal-tokens) control.</summary>
    Stage1EqualSteps,
    /// <summary>
    /// (b) Stage I continuation with as many forward + backward FLOPs as one LoopRPT arm (<see cref="ExperimentArm.ComputeOf"/>):
    /// its steps × its FLOPs per step / a Stage I step's (<see cref="Training.StepFlops"/>). The published arm's is
    /// <see cref="ExperimentArm.EqualComputeName"/>; a variant that costs a different number of FLOPs per step gets its own.
    /// </summary>
    Stage1EqualCompute,
    /// <summary>(c) LoopRPT with the published options.</summary>
    LoopRpt,
    /// <summary>(d) LoopRPT with a user's <see cref="ExperimentVariant"/>.</summary>
    Variant,
}

/// <summary>
/// One arm of the experiment: every arm starts from the same base checkpoint and, for a given seed, sees the same
/// batches with the same optimizer settings; only the objective (and, for the equal-compute control, the step count)
/// differs.
/// </summary>
public sealed class ExperimentArm
{
    /// <summary>Name of the equal-steps Stage I control.</summary>
    public const string EqualStepsName = "stage1-equal-steps";
    /// <summary>Name of the equal-compute Stage I control.</summary>
    public const string EqualComputeName = "stage1-equal-compute";
    /// <summary>Name of the LoopRPT arm with the published options.</summary>
    public const string LoopRptName = "looprpt";
    /// <summary>Name under which the base model appears in results (it is evaluated, not trained).</summary>
    public const string BaseName = "base";

    /// <summary>Names a variant may not take.</summary>
    public static IReadOnlyList<string> Reserved { get; } = [EqualStepsName, EqualComputeName, LoopRptName, BaseName];

    private readonly LoopRptObjectiveOptions? _loopRpt;

    private ExperimentArm(string name, ArmKind kind, double learningRate, LoopRptObjectiveOptions? loopRpt, string description, string? computeOf = null)
    {
        Name = name;
        ComputeOf = computeOf;
        Kind = kind;
        LearningRate = learningRate;
        _loopRpt = loopRpt?.Clone();
        Description = description;
    }

    /// <summary>The arm's name (a folder name and a table row).</summary>
    public string Name { get; }

    /// <summary>What it trains.</summary>
    public ArmKind Kind { get; }

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; }

    /// <summary>One line for the report.</summary>
    public string Description { get; }

    /// <summary>For an equal-compute control, the LoopRPT arm whose FLOPs it matches; null otherwise.</summary>
    public string? ComputeOf { get; }

    /// <summary>True for the Stage I controls.</summary>
    public bool IsControl => Kind is ArmKind.Stage1EqualSteps or ArmKind.Stage1EqualCompute;

    /// <summary>The LoopRPT options of a LoopRPT arm (seed not set), or null for a control.</summary>
    public LoopRptObjectiveOptions? LoopRptObjectiveOptions => _loopRpt?.Clone();

    /// <summary>The name of the equal-compute control of <paramref name="loopRptArm"/>.</summary>
    public static string EqualComputeNameFor(string loopRptArm) => loopRptArm == LoopRptName ? EqualComputeName : EqualComputeName + "-" + loopRptArm;

    /// <summary>
    /// The arms of an experiment in report order: (a) equal steps, (b) the equal-compute controls (if enabled: the published
    /// arm's, then one per variant whose FLOPs per step differ from it), (c) LoopRPT, (d) variants.
    /// </summary>
    internal static IReadOnlyList<ExperimentArm> For(ExperimentOptions o)
    {
        var c = CultureInfo.InvariantCulture;
        var published = new ExperimentArm(LoopRptName, ArmKind.LoopRpt, o.LearningRate, new LoopRptObjectiveOptions(), "LoopRPT, published defaults");
        var variants = o.Variants.Select(v => new ExperimentArm(v.Name, ArmKind.Variant, v.LearningRate ?? o.LearningRate, v.Options, "LoopRPT, " + v.Describe())).ToArray();
        var arms = new List<ExperimentArm>
        {
            new(EqualStepsName, ArmKind.Stage1EqualSteps, o.LearningRate, null, string.Format(c, "Stage I continuation, beta {0:G3}, same steps as LoopRPT", o.ContinuationBeta)),
        };
        if (o.EqualCompute)
            foreach (var a in variants.Where(v => o.CostRatio is null && !SameFlops(v._loopRpt!, published._loopRpt!)).Prepend(published))
                arms.Add(new(EqualComputeNameFor(a.Name), ArmKind.Stage1EqualCompute, o.LearningRate, null,
                    string.Format(c, "Stage I continuation, beta {0:G3}, as many FLOPs as {1}", o.ContinuationBeta, a.Name), computeOf: a.Name));
        arms.Add(published);
        arms.AddRange(variants);
        return arms;
    }

    /// <summary>The equal-compute control a LoopRPT arm is compared with: its own, else the published arm's (same FLOPs).</summary>
    internal static ExperimentArm? EqualComputeControlOf(IReadOnlyList<ExperimentArm> arms, string loopRptArm)
        => arms.FirstOrDefault(a => a.Kind == ArmKind.Stage1EqualCompute && a.ComputeOf == loopRptArm)
           ?? arms.FirstOrDefault(a => a.Kind == ArmKind.Stage1EqualCompute && a.ComputeOf == LoopRptName);

    /// <summary>Whether two LoopRPT option sets cost the same FLOPs per step (<see cref="Training.StepFlops.LoopRpt"/>'s inputs).</summary>
    private static bool SameFlops(LoopRptObjectiveOptions a, LoopRptObjectiveOptions b)
        => a.Rollouts == b.Rollouts && a.HardTokens == b.HardTokens && a.ChunkSize == b.ChunkSize
           && (a.HardTokens != HardTokenMode.TopFraction || a.HardTokenQuantile == b.HardTokenQuantile)
           && (a.KlCoef != 0 && a.Kl == KlVariant.Rollout) == (b.KlCoef != 0 && b.Kl == KlVariant.Rollout);

    /// <summary>The objective of this arm for <paramref name="seed"/> (LoopRPT's rollout noise and exit sampling follow the seed).</summary>
    internal ITrainingObjective CreateObjective(long seed, double continuationBeta)
    {
        if (_loopRpt is null)
            // Constant beta: Beta = LateBeta and no step-based switch, whatever the global step of the base checkpoint.
            return new PretrainObjective(new PretrainObjectiveOptions { Beta = continuationBeta, LateBeta = continuationBeta, LateBetaFrom = 1 });
        var options = _loopRpt.Clone();
        options.Seed = seed;
        return new LoopRptObjective(options);
    }

    /// <summary>The arm's definition as JSON (kept in each run folder; a resume with a different definition is refused).</summary>
    internal string DefinitionJson(long steps, double continuationBeta) => JsonSerializer.Serialize(new Definition
    {
        Name = Name, Kind = Kind.ToString(), Steps = steps, LearningRate = LearningRate,
        Beta = _loopRpt is null ? continuationBeta : null, LoopRpt = _loopRpt,
    }, DefinitionJsonOptions);

    private static readonly JsonSerializerOptions DefinitionJsonOptions = new()
    {
        WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, Converters = { new JsonStringEnumConverter() },
    };

    private sealed class Definition
    {
        [JsonPropertyName("name")] public string Name { get; set; } = "";
        [JsonPropertyName("kind")] public string Kind { get; set; } = "";
        [JsonPropertyName("steps")] public long Steps { get; set; }
        [JsonPropertyName("learning_rate")] public double LearningRate { get; set; }
        [JsonPropertyName("beta")] public double? Beta { get; set; }
        [JsonPropertyName("looprpt")] public LoopRptObjectiveOptions? LoopRpt { get; set; }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {Description}";
}
