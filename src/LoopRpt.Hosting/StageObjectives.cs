using LoopRpt.Objectives;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>Turns a configured stage into its training objective. Replace or extend it to add stage kinds (LoopRPT).</summary>
public interface IStageObjectiveFactory
{
    /// <summary>The stage kinds this factory knows (for validation messages).</summary>
    IReadOnlyCollection<string> Kinds { get; }

    /// <summary>A new objective for <paramref name="stage"/>; throws <see cref="ArgumentException"/> for an unknown kind or bad parameters.</summary>
    ITrainingObjective Create(StageOptions stage);
}

/// <summary>
/// Stage kinds beyond the built-in ones (pretrain, gate, looprpt), by name. Filled through
/// <see cref="LoopRptHostingBuilder.AddStageObjective"/>, e.g. <c>.AddStageObjective("mine", s =&gt; new MyObjective(...))</c>.
/// </summary>
public sealed class StageObjectiveRegistry
{
    internal Dictionary<string, Func<StageOptions, ITrainingObjective>> Factories { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Registers (or replaces) the objective factory of <paramref name="kind"/>.</summary>
    public StageObjectiveRegistry Add(string kind, Func<StageOptions, ITrainingObjective> factory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(kind);
        ArgumentNullException.ThrowIfNull(factory);
        Factories[kind] = factory;
        return this;
    }
}

/// <summary>
/// The default <see cref="IStageObjectiveFactory"/>: <c>pretrain</c> (Ouro Stage I; parameters <c>Beta</c>,
/// <c>LateBeta</c>, <c>LateBetaFrom</c>), <c>gate</c> (Stage II; <c>K</c>, <c>Gamma</c>), and every kind in the
/// <see cref="StageObjectiveRegistry"/>.
/// </summary>
public sealed class StageObjectiveFactory : IStageObjectiveFactory
{
    public const string Pretrain = "pretrain";
    public const string Gate = "gate";
    public const string LoopRpt = "looprpt";

    private readonly Dictionary<string, Func<StageOptions, ITrainingObjective>> _factories = new(StringComparer.OrdinalIgnoreCase)
    {
        [Pretrain] = CreatePretrain,
        [Gate] = CreateGate,
        [LoopRpt] = CreateLoopRpt,
    };

    public StageObjectiveFactory(IOptions<StageObjectiveRegistry> registry)
    {
        foreach (var (kind, factory) in registry.Value.Factories) _factories[kind] = factory;
    }

    public IReadOnlyCollection<string> Kinds => _factories.Keys.Order(StringComparer.Ordinal).ToList();

    public ITrainingObjective Create(StageOptions stage)
    {
        ArgumentNullException.ThrowIfNull(stage);
        if (!_factories.TryGetValue(stage.Kind ?? "", out var factory))
            throw new ArgumentException($"'{stage.Kind}' is not a known stage kind; known kinds: {string.Join(", ", Kinds)}.", nameof(stage));
        return factory(stage);
    }

    private static ITrainingObjective CreatePretrain(StageOptions s)
    {
        s.EnsureOnlyParameters(nameof(PretrainObjectiveOptions.Beta), nameof(PretrainObjectiveOptions.LateBeta), nameof(PretrainObjectiveOptions.LateBetaFrom));
        var options = new PretrainObjectiveOptions
        {
            Beta = s.GetDouble(nameof(PretrainObjectiveOptions.Beta), PretrainObjectiveOptions.Defaults.Beta),
            LateBeta = s.GetDouble(nameof(PretrainObjectiveOptions.LateBeta), PretrainObjectiveOptions.Defaults.LateBeta),
            LateBetaFrom = s.GetDouble(nameof(PretrainObjectiveOptions.LateBetaFrom), PretrainObjectiveOptions.Defaults.LateBetaFrom),
        };
        return new PretrainObjective(options, s.Steps);
    }

    /// <summary>LoopRPT; numeric parameters by <see cref="LoopRptOptions"/> property name, the enums by value name.</summary>
    private static ITrainingObjective CreateLoopRpt(StageOptions s)
    {
        var d = new LoopRptOptions();
        s.EnsureOnlyParameters(nameof(d.EmaDecay), nameof(d.HardTokens), nameof(d.HardTokenQuantile), nameof(d.EntropyThreshold), nameof(d.TeacherQ),
            nameof(d.PriceBase), nameof(d.Kappa), nameof(d.RewardScale), nameof(d.Rollouts), nameof(d.Sigma), nameof(d.Noise),
            nameof(d.EntropyBonus), nameof(d.KlCoef), nameof(d.Kl), nameof(d.RolloutsPerMicroBatch), nameof(d.Seed));
        T Enum<T>(string name, T fallback) where T : struct, Enum
            => s.GetString(name) is { } v
                ? (System.Enum.TryParse<T>(v, ignoreCase: true, out var e) ? e : throw new ArgumentException($"Stage parameter {name} = '{v}' is not one of {string.Join(", ", System.Enum.GetNames<T>())}."))
                : fallback;
        return new LoopRptObjective(new LoopRptOptions
        {
            EmaDecay = s.GetDouble(nameof(d.EmaDecay), d.EmaDecay),
            HardTokens = Enum(nameof(d.HardTokens), d.HardTokens),
            HardTokenQuantile = s.GetDouble(nameof(d.HardTokenQuantile), d.HardTokenQuantile),
            EntropyThreshold = s.GetDouble(nameof(d.EntropyThreshold), d.EntropyThreshold),
            TeacherQ = s.GetDouble(nameof(d.TeacherQ), d.TeacherQ),
            PriceBase = s.GetDouble(nameof(d.PriceBase), d.PriceBase),
            Kappa = s.GetDouble(nameof(d.Kappa), d.Kappa),
            RewardScale = s.GetDouble(nameof(d.RewardScale), d.RewardScale),
            Rollouts = (int)s.GetDouble(nameof(d.Rollouts), d.Rollouts),
            Sigma = s.GetDouble(nameof(d.Sigma), d.Sigma),
            Noise = Enum(nameof(d.Noise), d.Noise),
            EntropyBonus = s.GetDouble(nameof(d.EntropyBonus), d.EntropyBonus),
            KlCoef = s.GetDouble(nameof(d.KlCoef), d.KlCoef),
            Kl = Enum(nameof(d.Kl), d.Kl),
            RolloutsPerMicroBatch = (int)s.GetDouble(nameof(d.RolloutsPerMicroBatch), d.RolloutsPerMicroBatch),
            Seed = (long)s.GetDouble(nameof(d.Seed), d.Seed),
        });
    }

    private static ITrainingObjective CreateGate(StageOptions s)
    {
        s.EnsureOnlyParameters(nameof(GateObjectiveOptions.K), nameof(GateObjectiveOptions.Gamma));
        return new GateObjective(new GateObjectiveOptions
        {
            K = s.GetDouble(nameof(GateObjectiveOptions.K), GateObjectiveOptions.Defaults.K),
            Gamma = s.GetDouble(nameof(GateObjectiveOptions.Gamma), GateObjectiveOptions.Defaults.Gamma),
        });
    }
}
