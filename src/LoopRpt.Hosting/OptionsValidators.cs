using System.Text.RegularExpressions;
using LoopRpt.Model;
using LoopRpt.Training;
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
        if (o.PollInterval < TimeSpan.Zero || o.PollInterval > TimeSpan.FromDays(1))
            errors.Add($"ModelStoreOptions.PollInterval must be between 00:00:00 (off) and 1.00:00:00; got {o.PollInterval}.");
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

/// <summary>
/// Checks <see cref="RetrainingOptions"/> when the host starts. The trainer settings and every stage are checked by the core
/// (<see cref="TrainerOptions.Validate"/>, <see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/>: kind,
/// optimizer settings, objective parameters); this adds what only hosting has (folders, schedule, validation).
/// </summary>
public sealed class RetrainingOptionsValidator(IOptions<ObjectiveKindRegistry> kinds) : IValidateOptions<RetrainingOptions>
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
        foreach (var e in o.ToTrainerOptions().Problems())
            errors.Add($"RetrainingOptions.{FirstLine(e.Message).TrimEnd('.')}; got {(e as ArgumentOutOfRangeException)?.ActualValue}.");
        Check(Enum.IsDefined(o.Metric), $"RetrainingOptions.Metric must be Loss or Accuracy; got {o.Metric}.");
        Check(o.MinImprovement >= 0 && double.IsFinite(o.MinImprovement), $"RetrainingOptions.MinImprovement must be a non-negative number; got {o.MinImprovement}.");
        Check(o.MaxValidationTokens >= 1, $"RetrainingOptions.MaxValidationTokens must be at least 1; got {o.MaxValidationTokens}.");
        try { ExitMode.Parse(o.ValidationExit); }
        catch (ArgumentException e) { errors.Add("RetrainingOptions.ValidationExit: " + FirstLine(e.Message)); }

        var registry = kinds.Value;
        if (o.Stages.Count == 0)
            errors.Add($"RetrainingOptions.Stages is empty; a round needs at least one stage (kinds: {string.Join(", ", registry.Names)}).");
        for (int i = 0; i < o.Stages.Count; i++)
        {
            var s = o.Stages[i];
            var at = $"RetrainingOptions.Stages[{i}] ('{s.Kind}')";
            Check(s.Steps >= 1, $"{at}.Steps must be at least 1; got {s.Steps}.");
            try
            {
                // Building the stage checks its kind, settings and parameters now rather than at the first round.
                registry.CreateStage(s, at).Objective.Dispose();
            }
            catch (ArgumentException e)
            {
                errors.Add(FirstLine(e.Message));
            }
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    // ArgumentException appends " (Parameter 'x')" on a new line; keep the sentence.
    private static string FirstLine(string message) => message.Split(" (Parameter '")[0].Split(Environment.NewLine)[0];
}
