using System.Globalization;
using LoopRpt.Training;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// The <c>--stages</c> plan: comma-separated <c>KIND:STEPS[:LR][:NAME=VALUE]...</c> with KIND = pretrain (Ouro Stage I), gate
/// (Stage II) or looprpt, in any order and number, e.g. <c>pretrain:300:Beta=0.05,gate:50,looprpt:40:3e-4:Rollouts=4</c>.
/// NAME=VALUE pairs set the objective's options by property name (<see cref="ObjectiveKind.BindOptions"/>, the binder hosting's
/// stage <c>Parameters</c> use), so the CLI, hosting and ML.NET build a stage the same way (<see cref="ObjectiveKindRegistry"/>).
/// </summary>
internal sealed record StageSpec(string Kind, long Steps, double? LearningRate, IReadOnlyDictionary<string, string>? Parameters = null)
{
    private static ObjectiveKindRegistry Kinds => ObjectiveKindRegistry.BuiltIn;

    public static IReadOnlyList<StageSpec> ParseList(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw CliException.Usage("--stages needs at least one stage, e.g. pretrain:200,gate:50.");
        return parts.Select(Parse).ToArray();
    }

    private static StageSpec Parse(string part)
    {
        var f = part.Split(':');
        if (!Kinds.Contains(f[0])) throw CliException.Usage($"--stages: unknown stage '{f[0]}' in '{part}'; expected one of {string.Join(", ", Kinds.Names)}.");
        var kind = Kinds.Get(f[0]).Name;
        if (f.Length < 2 || f[1].Contains('='))
            throw CliException.Usage($"--stages: '{part}' gives no step count; write KIND:STEPS[:LR][:NAME=VALUE]..., e.g. {kind}:100.");
        if (!long.TryParse(f[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var steps) || steps < 1)
            throw CliException.Usage($"--stages: STEPS '{f[1]}' in '{part}' must be a positive integer.");
        double? lr = null;
        if (f.Length > 2 && !f[2].Contains('='))
        {
            if (!double.TryParse(f[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0) || double.IsInfinity(v))
                throw CliException.Usage($"--stages: learning rate '{f[2]}' in '{part}' must be a positive number.");
            lr = v;
        }
        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var field in f.Skip(lr is null ? 2 : 3))
        {
            int eq = field.IndexOf('=');
            if (eq <= 0)
                throw CliException.Usage($"--stages: ':{field}' is extra in '{part}': a stage is KIND:STEPS[:LR] followed only by NAME=VALUE parameters, e.g. {kind}:{steps}:{ExampleParameter(kind)}.");
            if (!parameters.TryAdd(field[..eq].Trim(), field[(eq + 1)..].Trim()))
                throw CliException.Usage($"--stages: parameter '{field[..eq]}' is given twice in '{part}'.");
        }
        return new StageSpec(kind, steps, lr, parameters);
    }

    private static string ExampleParameter(string kind) => Kinds.Get(kind).ParameterNames is [var first, ..] ? $"{first}=..." : "NAME=VALUE";

    /// <summary>
    /// The trainer stage (<see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/>). Optimizer settings given as
    /// null take the defaults of the stage's kind (looprpt stages the published LoopRPT ones); <paramref name="commandParameters"/>
    /// (e.g. <c>--rollouts</c> for looprpt stages) are parameters the stage's own NAME=VALUE pairs override.
    /// </summary>
    public TrainingStage ToStage(double defaultLr, double? warmup, double? weightDecay, double? clip, int accumulation,
                                 IReadOnlyDictionary<string, string>? commandParameters = null)
    {
        var parameters = new Dictionary<string, string>(commandParameters ?? new Dictionary<string, string>(), StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in Parameters ?? new Dictionary<string, string>()) parameters[name] = value;
        var definition = new StageDefinition
        {
            Kind = Kind, Steps = Steps, LearningRate = LearningRate ?? defaultLr, WarmupFraction = warmup, WeightDecay = weightDecay,
            GradientClip = clip, GradientAccumulation = accumulation, Parameters = parameters,
        };
        try
        {
            return Kinds.CreateStage(definition, $"--stages {this}");
        }
        catch (ArgumentException e)
        {
            throw CliException.Usage(e.Message.Split(" (Parameter '")[0]);
        }
    }

    /// <summary>The stage as written (parameters in the order given).</summary>
    public override string ToString()
        => string.Join(':', new[] { Kind, Steps.ToString(CultureInfo.InvariantCulture), LearningRate?.ToString("R", CultureInfo.InvariantCulture) }
            .Concat((Parameters ?? new Dictionary<string, string>()).Select(p => $"{p.Key}={p.Value}")).Where(x => x is not null));
}
