using System.Globalization;
using LoopRpt.Training;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// The <c>--stages</c> plan: comma-separated <c>KIND:STEPS[:LR][:NAME=VALUE]...</c> with KIND = pretrain (Ouro Stage I), gate
/// (Stage II) or looprpt, in any order and number, e.g. <c>pretrain:300:Beta=0.05,gate:50,looprpt:40:3e-4:Rollouts=4:Beta2=0.99</c>.
/// The text is only bound into core <see cref="StageDefinition"/>s: NAME is an optimizer setting
/// (<see cref="StageDefinition.OptimizerSettingNames"/>: LearningRate, MinLearningRateRatio, WarmupFraction, WeightDecay, Beta1,
/// Beta2, GradientClip, GradientAccumulation) or an option of the kind's objective (<see cref="ObjectiveKind.BindOptions"/>, the
/// binder of hosting's stage <c>Parameters</c>); <see cref="ObjectiveKindRegistry"/> validates and resolves them, and settings
/// given nowhere take the kind's <see cref="OptimizerDefaults"/> (a looprpt stage the published LoopRPT ones).
/// </summary>
internal static class StagePlan
{
    private static ObjectiveKindRegistry Kinds => ObjectiveKindRegistry.BuiltIn;

    /// <summary>
    /// The stages of <paramref name="text"/>, each as written (for messages) and as a definition that starts from
    /// <paramref name="command"/>'s optimizer settings (the command's options; null ones: the kind's defaults) and
    /// <paramref name="commandParameters"/> of its kind (e.g. <c>--rollouts</c> for looprpt stages); the stage's own
    /// <c>:LR</c> and NAME=VALUE pairs override both.
    /// </summary>
    public static IReadOnlyList<(StageDefinition Definition, string Text)> Parse(string text, StageDefinition? command = null,
                                                                                  Func<string, IReadOnlyDictionary<string, string>?>? commandParameters = null)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw CliException.Usage("--stages needs at least one stage, e.g. pretrain:200,gate:50.");
        return parts.Select(p => (ParseStage(p, command, commandParameters), p)).ToArray();
    }

    /// <summary>The trainer stages of a parsed plan (validated; errors are usage errors naming the stage as written).</summary>
    public static TrainingStage[] ToStages(IReadOnlyList<(StageDefinition Definition, string Text)> plan)
        => plan.Select(p => Usage(() => Kinds.CreateStage(p.Definition, $"--stages {p.Text}"))).ToArray();

    /// <summary>The stages' kinds and steps, e.g. for the progress display.</summary>
    public static (string Kind, long Steps)[] KindsAndSteps(IReadOnlyList<(StageDefinition Definition, string Text)> plan)
        => plan.Select(p => (p.Definition.Kind, p.Definition.Steps)).ToArray();

    private static StageDefinition ParseStage(string part, StageDefinition? command, Func<string, IReadOnlyDictionary<string, string>?>? commandParameters)
    {
        var f = part.Split(':');
        if (!Kinds.Contains(f[0])) throw CliException.Usage($"--stages: unknown stage '{f[0]}' in '{part}'; expected one of {string.Join(", ", Kinds.Names)}.");
        var kind = Kinds.Get(f[0]).Name;
        if (f.Length < 2 || f[1].Contains('='))
            throw CliException.Usage($"--stages: '{part}' gives no step count; write KIND:STEPS[:LR][:NAME=VALUE]..., e.g. {kind}:100.");
        if (!long.TryParse(f[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var steps) || steps < 1)
            throw CliException.Usage($"--stages: STEPS '{f[1]}' in '{part}' must be a positive integer.");
        var parameters = new Dictionary<string, string>(commandParameters?.Invoke(kind) ?? new Dictionary<string, string>(), StringComparer.OrdinalIgnoreCase);
        var definition = (command ?? new StageDefinition { Kind = kind }) with { Kind = kind, Steps = steps, Parameters = parameters };
        bool positionalLr = f.Length > 2 && !f[2].Contains('=');
        if (positionalLr)
        {
            if (!double.TryParse(f[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0) || double.IsInfinity(v))
                throw CliException.Usage($"--stages: learning rate '{f[2]}' in '{part}' must be a positive number.");
            definition = definition with { LearningRate = v };
        }
        var given = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var field in f.Skip(positionalLr ? 3 : 2))
        {
            int eq = field.IndexOf('=');
            if (eq <= 0)
                throw CliException.Usage($"--stages: ':{field}' is extra in '{part}': a stage is KIND:STEPS[:LR] followed only by NAME=VALUE parameters, e.g. {kind}:{steps}:{ExampleParameter(kind)}.");
            var (name, value) = (field[..eq].Trim(), field[(eq + 1)..].Trim());
            if (!given.Add(name)) throw CliException.Usage($"--stages: parameter '{name}' is given twice in '{part}'.");
            definition = Usage(() => definition.WithSetting(name, value, $"--stages {part}")) ?? definition;
            if (!StageDefinition.OptimizerSettingNames.Contains(name, StringComparer.OrdinalIgnoreCase)) parameters[name] = value;
        }
        return definition;
    }

    private static string ExampleParameter(string kind) => Kinds.Get(kind).ParameterNames is [var first, ..] ? $"{first}=..." : "NAME=VALUE";

    private static T Usage<T>(Func<T> build)
    {
        try
        {
            return build();
        }
        catch (ArgumentException e)
        {
            throw CliException.Usage(e.Message.Split(" (Parameter '")[0]);
        }
    }
}
