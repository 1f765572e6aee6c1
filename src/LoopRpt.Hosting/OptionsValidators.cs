using System.Text.RegularExpressions;
using LoopRpt.Model;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>Checks <see cref="ModelStoreOptions"/> when the host starts; each failure names the option and what was expected.</summary>
public sealed partial class ModelStoreOptionsValidator : IValidateOptions<ModelStoreOptions>
{
    public ValidateOptionsResult Validate(string? name, ModelStoreOptions o)
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(o.Root)) errors.Add("ModelStoreOptions.Root is required: the directory that holds the model versions.");
        if (o.KeepVersions < 1) errors.Add($"ModelStoreOptions.KeepVersions must be at least 1; got {o.KeepVersions}.");
        if (!DevicePattern().IsMatch(o.Device ?? "")) errors.Add($"ModelStoreOptions.Device must be 'cpu', 'cuda' or 'cuda:N'; got '{o.Device}'.");
        if (o.InitialModelDirectory is not null && o.InitialPreset is not null)
            errors.Add("Set at most one of ModelStoreOptions.InitialModelDirectory and ModelStoreOptions.InitialPreset.");
        // InitialModelDirectory is not checked for existence: it only matters while the store is empty, and a store that
        // already has versions must not fail to start because its seed directory was cleaned up (the store reports it then).
        if (o.InitialPreset is { } preset)
        {
            try { OuroConfig.FromPreset(preset); }
            catch (ArgumentOutOfRangeException e) { errors.Add($"ModelStoreOptions.InitialPreset: {e.Message.Split(Environment.NewLine)[0]}"); }
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    [GeneratedRegex("^(cpu|cuda(:[0-9]+)?)$", RegexOptions.IgnoreCase)]
    private static partial Regex DevicePattern();
}

/// <summary>Checks <see cref="RetrainingOptions"/> when the host starts, including that every stage kind resolves to an objective.</summary>
public sealed class RetrainingOptionsValidator(IStageObjectiveFactory objectives) : IValidateOptions<RetrainingOptions>
{
    private static readonly TimeSpan MaxTimer = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    public ValidateOptionsResult Validate(string? name, RetrainingOptions o)
    {
        var errors = new List<string>();
        void Check(bool ok, string message)
        {
            if (!ok) errors.Add(message);
        }

        Check(!string.IsNullOrWhiteSpace(o.DataDirectory), "RetrainingOptions.DataDirectory is required: the folder where training data lands.");
        Check(o.Period >= TimeSpan.Zero && o.Period <= MaxTimer, $"RetrainingOptions.Period must be zero (no schedule) or a positive time span of at most {MaxTimer}; got {o.Period}.");
        Check(o.DataPollInterval >= TimeSpan.Zero && o.DataPollInterval <= MaxTimer, $"RetrainingOptions.DataPollInterval must be zero (no polling) or a positive time span of at most {MaxTimer}; got {o.DataPollInterval}.");
        if (o.ValidationDirectory is null)
            Check(o.HoldoutFraction is > 0 and < 1, $"RetrainingOptions.HoldoutFraction must lie in (0, 1) when no ValidationDirectory is set; got {o.HoldoutFraction}.");
        Check(o.BatchSize >= 1, $"RetrainingOptions.BatchSize must be at least 1; got {o.BatchSize}.");
        Check(o.SequenceLength >= 1, $"RetrainingOptions.SequenceLength must be at least 1; got {o.SequenceLength}.");
        Check(o.CheckpointEvery >= 0, $"RetrainingOptions.CheckpointEvery must be non-negative (0: end of each stage only); got {o.CheckpointEvery}.");
        Check(o.LogEvery >= 1, $"RetrainingOptions.LogEvery must be at least 1; got {o.LogEvery}.");
        Check(o.SpikeFactor == 0 || (o.SpikeFactor > 1 && double.IsFinite(o.SpikeFactor)), $"RetrainingOptions.SpikeFactor must be 0 (rule off) or a number above 1; got {o.SpikeFactor}.");
        Check(o.SpikePatience >= 1, $"RetrainingOptions.SpikePatience must be at least 1; got {o.SpikePatience}.");
        Check(o.SpikeWindow >= 1, $"RetrainingOptions.SpikeWindow must be at least 1; got {o.SpikeWindow}.");
        Check(Enum.IsDefined(o.Metric), $"RetrainingOptions.Metric must be Loss or Accuracy; got {o.Metric}.");
        Check(o.MinImprovement >= 0 && double.IsFinite(o.MinImprovement), $"RetrainingOptions.MinImprovement must be a non-negative number; got {o.MinImprovement}.");
        Check(o.MaxValidationTokens >= 1, $"RetrainingOptions.MaxValidationTokens must be at least 1; got {o.MaxValidationTokens}.");
        try { ExitMode.Parse(o.ValidationExit); }
        catch (ArgumentException e) { errors.Add("RetrainingOptions.ValidationExit: " + FirstLine(e.Message)); }

        if (o.Stages.Count == 0)
            errors.Add($"RetrainingOptions.Stages is empty; a round needs at least one stage (kinds: {string.Join(", ", objectives.Kinds)}).");
        for (int i = 0; i < o.Stages.Count; i++)
        {
            var s = o.Stages[i];
            var at = $"RetrainingOptions.Stages[{i}] ('{s.Kind}')";
            Check(s.Steps >= 1, $"{at}.Steps must be at least 1; got {s.Steps}.");
            Check(s.LearningRate > 0 && double.IsFinite(s.LearningRate), $"{at}.LearningRate must be positive and finite; got {s.LearningRate}.");
            Check(s.MinLearningRateRatio is null or (>= 0 and <= 1), $"{at}.MinLearningRateRatio must lie in [0, 1]; got {s.MinLearningRateRatio}.");
            Check(s.WarmupFraction is null or (>= 0 and < 1), $"{at}.WarmupFraction must lie in [0, 1); got {s.WarmupFraction}.");
            Check(s.WeightDecay is null or >= 0, $"{at}.WeightDecay must be non-negative; got {s.WeightDecay}.");
            Check(s.GradientClip is null or >= 0, $"{at}.GradientClip must be non-negative; got {s.GradientClip}.");
            Check(s.GradientAccumulation >= 1, $"{at}.GradientAccumulation must be at least 1; got {s.GradientAccumulation}.");
            try
            {
                // Building the objective checks its kind and parameters now rather than at the first round.
                objectives.Create(s).Dispose();
            }
            catch (ArgumentException e)
            {
                errors.Add($"{at}: {FirstLine(e.Message)}");
            }
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    // ArgumentException appends " (Parameter 'x')" on a new line; keep the sentence.
    private static string FirstLine(string message) => message.Split(" (Parameter '")[0].Split(Environment.NewLine)[0];
}
