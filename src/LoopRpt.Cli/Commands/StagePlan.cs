using System.Globalization;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// The <c>--stages</c> plan: comma-separated <c>KIND:STEPS[:LR]</c> with KIND = pretrain (Ouro Stage I), gate (Stage II)
/// or looprpt, in any order and number, e.g. <c>pretrain:300,gate:50,looprpt:40:3e-4</c>.
/// </summary>
internal sealed record StageSpec(string Kind, long Steps, double? LearningRate)
{
    public static readonly string[] Kinds = ["pretrain", "gate", "looprpt"];

    public static IReadOnlyList<StageSpec> ParseList(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw CliException.Usage("--stages needs at least one stage, e.g. pretrain:200,gate:50.");
        return parts.Select(Parse).ToArray();
    }

    private static StageSpec Parse(string part)
    {
        var f = part.Split(':');
        var kind = f[0].ToLowerInvariant();
        if (!Kinds.Contains(kind)) throw CliException.Usage($"--stages: unknown stage '{f[0]}' in '{part}'; expected one of {string.Join(", ", Kinds)}.");
        if (f.Length < 2)
            throw CliException.Usage($"--stages: '{part}' gives no step count; write KIND:STEPS[:LR], e.g. {kind}:100.");
        if (f.Length > 3)
            throw CliException.Usage($"--stages: '{part}' has {f.Length} fields; a stage is KIND:STEPS[:LR] (at most 3), so ':{string.Join(":", f[3..])}' is extra.");
        if (!long.TryParse(f[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var steps) || steps < 1)
            throw CliException.Usage($"--stages: STEPS '{f[1]}' in '{part}' must be a positive integer.");
        double? lr = null;
        if (f.Length == 3)
        {
            if (!double.TryParse(f[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0) || double.IsInfinity(v))
                throw CliException.Usage($"--stages: learning rate '{f[2]}' in '{part}' must be a positive number.");
            lr = v;
        }
        return new StageSpec(kind, steps, lr);
    }

    /// <summary>
    /// The trainer stage; <paramref name="looprpt"/> creates the LoopRPT objective. Optimizer settings given as null take
    /// the defaults of the stage's kind (<see cref="TrainingStage.DefaultsFor"/>: looprpt stages the published LoopRPT ones).
    /// </summary>
    public TrainingStage ToStage(double defaultLr, double? warmup, double? weightDecay, double? clip, int accumulation, Func<ITrainingObjective> looprpt)
    {
        ITrainingObjective objective = Kind switch
        {
            "pretrain" => new PretrainObjective(totalSteps: Steps),
            "gate" => new GateObjective(),
            _ => looprpt(),
        };
        var d = TrainingStage.DefaultsFor(loopRpt: Kind == "looprpt");
        return new TrainingStage(objective, Steps)
        {
            LearningRate = LearningRate ?? defaultLr, MinLearningRateRatio = d.MinLearningRateRatio, WarmupFraction = warmup ?? d.WarmupFraction,
            WeightDecay = weightDecay ?? d.WeightDecay, Beta1 = d.Beta1, Beta2 = d.Beta2, GradientClip = clip ?? d.GradientClip, GradientAccumulation = accumulation,
        };
    }
}
