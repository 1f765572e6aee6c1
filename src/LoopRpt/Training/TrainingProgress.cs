using System.Globalization;
using System.Text;
using LoopRpt.Checkpoints;

namespace LoopRpt.Training;

/// <summary>A progress report, emitted every <see cref="TrainerOptions.LogEvery"/> steps and at the end of each stage.</summary>
public sealed record TrainingProgress
{
    public required string Stage { get; init; }
    public required int StageIndex { get; init; }
    /// <summary>Completed steps in this stage.</summary>
    public required long Step { get; init; }
    public required long StageSteps { get; init; }
    /// <summary>Completed optimizer steps over all stages (including any before a resume).</summary>
    public required long GlobalStep { get; init; }
    /// <summary>Mean loss over the steps since the last report.</summary>
    public required double Loss { get; init; }
    /// <summary>Mean metrics since the last report: one value, or one per loop step (e.g. <c>step_loss</c>).</summary>
    public required IReadOnlyDictionary<string, double[]> Metrics { get; init; }
    public required double LearningRate { get; init; }
    public required double GradNorm { get; init; }
    public required double TokensPerSecond { get; init; }
    public required long TokensSeen { get; init; }
    /// <summary>Steps skipped for a non-finite loss or gradient, this stage.</summary>
    public required long SkippedSteps { get; init; }
    public required TimeSpan Elapsed { get; init; }
    /// <summary>Reports in a row, this one included, whose loss the spike rule counted as a spike (<see cref="LossSpikeRule"/>); 0 when sane.</summary>
    public int SpikeStreak { get; init; }

    /// <summary>Estimated time to the end of the stage.</summary>
    public TimeSpan Eta => Step <= 0 ? TimeSpan.Zero : TimeSpan.FromTicks((long)(Elapsed.Ticks * (double)(StageSteps - Step) / Step));

    /// <summary>Mean exit step (1-indexed) if the objective reports it.</summary>
    public double? MeanExitStep => Metrics.TryGetValue("expected_exit_step", out var v) ? v[0] : null;

    /// <summary>One parseable line: <c>key=value</c> pairs, vectors as comma lists in brackets.</summary>
    public override string ToString()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(c, $"stage={Stage} step={Step}/{StageSteps} global_step={GlobalStep} loss={Loss:F4} lr={LearningRate:E3} grad_norm={GradNorm:F3} ");
        sb.Append(c, $"tok_s={TokensPerSecond:F0} tokens={TokensSeen} skipped={SkippedSteps} elapsed_s={Elapsed.TotalSeconds:F1} eta_s={Eta.TotalSeconds:F0}");
        if (SpikeStreak > 0) sb.Append(c, $" spike_streak={SpikeStreak}");
        foreach (var (k, v) in Metrics.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (k == "loss") continue;
            sb.Append(' ').Append(k).Append('=');
            sb.Append(v.Length == 1 ? v[0].ToString("G5", c) : "[" + string.Join(",", v.Select(x => x.ToString("G5", c))) + "]");
        }
        return sb.ToString();
    }
}

/// <summary>
/// What <see cref="LoopedLmTrainer.Train"/> did. <see cref="Meta"/> is the trained model's metadata, the one every surface
/// saves: <see cref="TrainerOptions.BaseMeta"/>'s history with the stages run appended (a stopped stage with the steps it
/// ran), the global step, the tokens seen, the last report's metrics and the base meta's tokenizer; the same as a
/// checkpoint written at the end would hold. Each result has its own copy.
/// </summary>
public sealed record TrainingResult(bool Completed, long GlobalStep, long TokensSeen, TrainingProgress? LastProgress, string? LastCheckpoint, ModelMeta Meta)
{
    /// <summary>How the plan's plateau-stopped stage ended (<see cref="TrainingStage.StopOnPlateau"/>); null when it has none or it did not finish.</summary>
    public PlateauOutcome? Plateau { get; init; }
}

/// <summary>What cancellation does.</summary>
public enum CancellationBehavior
{
    /// <summary>Write a checkpoint (when a checkpoint directory is set) and throw <see cref="OperationCanceledException"/>.</summary>
    CheckpointAndThrow,
    /// <summary>Write a checkpoint (when set) and return the partially trained model normally.</summary>
    ReturnPartial,
}
