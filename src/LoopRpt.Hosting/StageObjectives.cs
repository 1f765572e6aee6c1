using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>Turns a configured stage into its training objective. Replace or extend it to add stage kinds (LoopRPT).</summary>
public interface IStageObjectiveFactory
{
    /// <summary>The stage kinds this factory knows (for validation messages).</summary>
    IReadOnlyCollection<string> Kinds { get; }

    /// <summary>A new objective for <paramref name="stage"/>; throws <see cref="ArgumentException"/> for an unknown kind or bad parameters.</summary>
    ITrainingObjective Create(StageOptions stage);

    /// <summary>
    /// The trainer stage of <paramref name="stage"/> with a new objective (<see cref="Create"/>); settings the configuration
    /// leaves out take the defaults of the stage's kind.
    /// </summary>
    TrainingStage CreateStage(StageOptions stage) => stage.ToTrainingStage(Create(stage));
}

/// <summary>
/// Stage kinds beyond the built-in ones (pretrain, gate, looprpt), by name. Filled through
/// <see cref="LoopRptHostingBuilder.AddStageKind"/> (a typed <see cref="ObjectiveKind"/>, shared with the CLI and ML.NET
/// surfaces: its parameters are bound to its options class) or <see cref="LoopRptHostingBuilder.AddStageObjective"/>
/// (a function of the whole <see cref="StageOptions"/>, e.g. <c>.AddStageObjective("mine", s =&gt; new MyObjective(...))</c>).
/// </summary>
public sealed class StageObjectiveRegistry
{
    /// <summary>The typed kinds: the built-in ones and those added with <see cref="Add(ObjectiveKind)"/>.</summary>
    public ObjectiveKindRegistry Kinds { get; } = new();

    internal Dictionary<string, Func<StageOptions, ITrainingObjective>> Factories { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Registers (or replaces) the objective factory of <paramref name="kind"/>.</summary>
    public StageObjectiveRegistry Add(string kind, Func<StageOptions, ITrainingObjective> factory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(kind);
        ArgumentNullException.ThrowIfNull(factory);
        Factories[kind] = factory;
        return this;
    }

    /// <summary>Registers (or replaces) a typed kind: its <c>Parameters</c> are bound to its options class.</summary>
    public StageObjectiveRegistry Add(ObjectiveKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        Kinds.Add(kind);
        Factories.Remove(kind.Name);
        return this;
    }
}

/// <summary>
/// The default <see cref="IStageObjectiveFactory"/>: the kinds of <see cref="StageObjectiveRegistry.Kinds"/> — built in
/// <c>pretrain</c> (Ouro Stage I; parameters <c>Beta</c>, <c>LateBeta</c>, <c>LateBetaFrom</c>), <c>gate</c> (Stage II;
/// <c>K</c>, <c>Gamma</c>) and <c>looprpt</c> (the <see cref="LoopRptOptions"/> property names), parameters bound by
/// <see cref="ObjectiveKind.BindOptions"/> — and every function added with <see cref="StageObjectiveRegistry.Add(string, Func{StageOptions, ITrainingObjective})"/>.
/// </summary>
public sealed class StageObjectiveFactory : IStageObjectiveFactory
{
    /// <summary><see cref="ObjectiveKindRegistry.Pretrain"/>.</summary>
    public const string Pretrain = ObjectiveKindRegistry.Pretrain;
    /// <summary><see cref="ObjectiveKindRegistry.Gate"/>.</summary>
    public const string Gate = ObjectiveKindRegistry.Gate;
    /// <summary><see cref="ObjectiveKindRegistry.LoopRpt"/>.</summary>
    public const string LoopRpt = ObjectiveKindRegistry.LoopRpt;

    private readonly ObjectiveKindRegistry _kinds;
    private readonly Dictionary<string, Func<StageOptions, ITrainingObjective>> _factories;

    public StageObjectiveFactory(IOptions<StageObjectiveRegistry> registry)
    {
        _kinds = registry.Value.Kinds.Clone();
        _factories = new(registry.Value.Factories, StringComparer.OrdinalIgnoreCase);
    }

    public IReadOnlyCollection<string> Kinds => _kinds.Names.Union(_factories.Keys, StringComparer.OrdinalIgnoreCase).Order(StringComparer.Ordinal).ToList();

    public ITrainingObjective Create(StageOptions stage)
    {
        ArgumentNullException.ThrowIfNull(stage);
        if (_factories.TryGetValue(stage.Kind ?? "", out var factory)) return factory(stage);
        if (!_kinds.Contains(stage.Kind))
            throw new ArgumentException($"'{stage.Kind}' is not a known stage kind; known kinds: {string.Join(", ", Kinds)}.", nameof(stage));
        return _kinds.CreateObjective(stage.ToDefinition());
    }

    public TrainingStage CreateStage(StageOptions stage) => _kinds.CreateStage(stage.ToDefinition(), Create(stage));
}
