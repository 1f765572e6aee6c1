using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>
/// The stage kinds a plan may name, kind → objective: <c>pretrain</c> (Ouro Stage I, <see cref="PretrainObjectiveOptions"/>),
/// <c>gate</c> (Stage II, <see cref="GateObjectiveOptions"/>), <c>looprpt</c> (<see cref="LoopRptObjectiveOptions"/>, the published
/// optimizer settings <see cref="OptimizerDefaults.LoopRpt"/>), and any kind added with <see cref="Add"/>.
/// Turns a <see cref="StageDefinition"/> into a <see cref="TrainingStage"/> for the CLI, ML.NET and hosting alike: the one
/// extension point for stage kinds (hosting's <c>AddStageKind</c> and ML.NET's <c>Options.ObjectiveKinds</c> fill one).
/// </summary>
/// <example>
/// <code>
/// var kinds = new ObjectiveKindRegistry().Add(new ObjectiveKind&lt;MyOptions&gt;("mine", (o, steps) =&gt; new MyObjective(o)));
/// var stage = kinds.CreateStage(new StageDefinition { Kind = "mine", Steps = 100, Parameters = new Dictionary&lt;string, string&gt; { ["Alpha"] = "0.5" } });
/// </code>
/// </example>
public sealed class ObjectiveKindRegistry
{
    /// <summary>Ouro Stage I (<see cref="PretrainObjective"/>).</summary>
    public const string Pretrain = "pretrain";

    /// <summary>Ouro Stage II, exit-gate training (<see cref="GateObjective"/>).</summary>
    public const string Gate = "gate";

    /// <summary>LoopRPT reinforcement pre-training (<see cref="LoopRptObjective"/>).</summary>
    public const string LoopRpt = "looprpt";

    private readonly Dictionary<string, ObjectiveKind> _kinds = new(StringComparer.OrdinalIgnoreCase);
    private readonly bool _readOnly;

    /// <summary>A registry holding the built-in kinds, to which more may be added.</summary>
    public ObjectiveKindRegistry()
    {
        foreach (var kind in BuiltInKinds()) _kinds[kind.Name] = kind;
    }

    private ObjectiveKindRegistry(bool readOnly) : this() => _readOnly = readOnly;

    /// <summary>The built-in kinds only (read-only; create a registry to add kinds).</summary>
    public static ObjectiveKindRegistry BuiltIn { get; } = new(readOnly: true);

    /// <summary>The kinds' names, sorted.</summary>
    public IReadOnlyList<string> Names => _kinds.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>Adds (or replaces) a kind.</summary>
    /// <exception cref="InvalidOperationException">This is <see cref="BuiltIn"/>.</exception>
    public ObjectiveKindRegistry Add(ObjectiveKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        if (_readOnly) throw new InvalidOperationException("ObjectiveKindRegistry.BuiltIn is read-only; add kinds to a new ObjectiveKindRegistry().");
        _kinds[kind.Name] = kind;
        return this;
    }

    /// <summary>A copy with the same kinds (writable).</summary>
    public ObjectiveKindRegistry Clone()
    {
        var copy = new ObjectiveKindRegistry();
        foreach (var (name, kind) in _kinds) copy._kinds[name] = kind;
        return copy;
    }

    /// <summary>Whether <paramref name="name"/> is a kind here (case-insensitive).</summary>
    public bool Contains(string? name) => name is not null && _kinds.ContainsKey(name);

    /// <summary>The kind named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">No kind has that name; the message lists the known ones.</exception>
    public ObjectiveKind Get(string? name, string? stage = null)
        => name is not null && _kinds.TryGetValue(name, out var kind) ? kind
            : throw new ArgumentException(ObjectiveKind.Say(stage, $"'{name}' is not a known stage kind; known kinds: {string.Join(", ", Names)}."), "Kind");

    /// <summary>The optimizer defaults of <paramref name="name"/>'s stages; an unknown kind (a custom objective) gets <see cref="OptimizerDefaults.Pretraining"/>.</summary>
    public OptimizerDefaults OptimizerDefaultsOf(string? name)
        => name is not null && _kinds.TryGetValue(name, out var kind) ? kind.OptimizerDefaults : OptimizerDefaults.Pretraining;

    /// <summary>
    /// The objective of <paramref name="definition"/>: its kind's, with <see cref="StageDefinition.ObjectiveOptions"/> or the
    /// options bound from <see cref="StageDefinition.Parameters"/> (not both). <paramref name="stage"/> labels errors.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown kind or parameter, a bad value, or options of the wrong type.</exception>
    public ITrainingObjective CreateObjective(StageDefinition definition, string? stage = null)
    {
        ArgumentNullException.ThrowIfNull(definition);
        definition.Validate(stage);
        var kind = Get(definition.Kind, stage);
        if (definition.ObjectiveOptions is not null && definition.Parameters is { Count: > 0 })
            throw new ArgumentException(ObjectiveKind.Say(stage, "give ObjectiveOptions or Parameters, not both."), nameof(definition));
        var options = definition.ObjectiveOptions ?? kind.BindOptions(definition.Parameters, stage);
        return kind.CreateObjective(options, definition.Steps, stage);
    }

    /// <summary>The trainer stage of <paramref name="definition"/>, with its kind's objective (<see cref="CreateObjective"/>).</summary>
    /// <exception cref="ArgumentException">Unknown kind or parameter, a bad value, or options of the wrong type.</exception>
    public TrainingStage CreateStage(StageDefinition definition, string? stage = null)
        => CreateStage(definition, CreateObjective(definition, stage), stage);

    /// <summary>
    /// The trainer stage of <paramref name="definition"/> running <paramref name="objective"/> (e.g. one a custom factory made);
    /// settings the definition leaves null take the defaults of its kind (<see cref="OptimizerDefaultsOf"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting out of range (<see cref="StageDefinition.Validate"/>).</exception>
    public TrainingStage CreateStage(StageDefinition definition, ITrainingObjective objective, string? stage = null)
    {
        ArgumentNullException.ThrowIfNull(definition);
        definition.Validate(stage);
        var d = OptimizerDefaultsOf(definition.Kind);
        return new TrainingStage(objective, definition.Steps, d)
        {
            LearningRate = definition.LearningRate ?? d.LearningRate,
            MinLearningRateRatio = definition.MinLearningRateRatio ?? d.MinLearningRateRatio,
            WarmupFraction = definition.WarmupFraction ?? d.WarmupFraction,
            WeightDecay = definition.WeightDecay ?? d.WeightDecay,
            Beta1 = definition.Beta1 ?? d.Beta1,
            Beta2 = definition.Beta2 ?? d.Beta2,
            GradientClip = definition.GradientClip ?? d.GradientClip,
            GradientAccumulation = definition.GradientAccumulation ?? d.GradientAccumulation,
        };
    }

    private static IEnumerable<ObjectiveKind> BuiltInKinds() =>
    [
        new ObjectiveKind<PretrainObjectiveOptions>(Pretrain, (o, _) => new PretrainObjective(o), OptimizerDefaults.Pretraining, o => o.Validate()),
        new ObjectiveKind<GateObjectiveOptions>(Gate, (o, _) => new GateObjective(o), OptimizerDefaults.Pretraining, o => o.Validate()),
        new ObjectiveKind<LoopRptObjectiveOptions>(LoopRpt, (o, _) => new LoopRptObjective(o), OptimizerDefaults.LoopRpt, o => o.Validate()),
    ];
}
