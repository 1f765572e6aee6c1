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
    /// <summary>(b) Stage I continuation for LoopRPT's steps × the measured cost ratio: the equal-compute control.</summary>
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

    private ExperimentArm(string name, ArmKind kind, double learningRate, LoopRptObjectiveOptions? loopRpt, string description)
    {
        Name = name;
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

    /// <summary>True for the Stage I controls.</summary>
    public bool IsControl => Kind is ArmKind.Stage1EqualSteps or ArmKind.Stage1EqualCompute;

    /// <summary>The LoopRPT options of a LoopRPT arm (seed not set), or null for a control.</summary>
    public LoopRptObjectiveOptions? LoopRptObjectiveOptions => _loopRpt?.Clone();

    /// <summary>The arms of an experiment in report order: (a) equal steps, (b) equal compute (if enabled), (c) LoopRPT, (d) variants.</summary>
    internal static IReadOnlyList<ExperimentArm> For(ExperimentOptions o)
    {
        var c = CultureInfo.InvariantCulture;
        var arms = new List<ExperimentArm>
        {
            new(EqualStepsName, ArmKind.Stage1EqualSteps, o.LearningRate, null, string.Format(c, "Stage I continuation, beta {0:G3}, same steps as LoopRPT", o.ContinuationBeta)),
        };
        if (o.EqualCompute)
            arms.Add(new(EqualComputeName, ArmKind.Stage1EqualCompute, o.LearningRate, null, string.Format(c, "Stage I continuation, beta {0:G3}, LoopRPT's steps × the cost ratio", o.ContinuationBeta)));
        arms.Add(new(LoopRptName, ArmKind.LoopRpt, o.LearningRate, new LoopRptObjectiveOptions(), "LoopRPT, published defaults"));
        arms.AddRange(o.Variants.Select(v => new ExperimentArm(v.Name, ArmKind.Variant, v.LearningRate ?? o.LearningRate, v.Options, "LoopRPT, " + v.Describe())));
        return arms;
    }

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
