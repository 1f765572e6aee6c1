using LoopRpt.Model;

namespace LoopRpt.Inference;

/// <summary>
/// The per-loop exit decision of adaptive inference, resolved from an <see cref="ExitMode"/> for a model with T loops.
/// A token exits after loop t when t is the fixed step, or when its exit CDF(t) = 1 - S_t reaches q, or at the last loop.
/// </summary>
internal readonly record struct ExitRule(double Threshold, int FixedStep, int Loops)
{
    /// <summary>True when no token can exit before <see cref="LastLoop"/>, so the gate need not be evaluated.</summary>
    public bool Static => FixedStep >= 0 || Threshold >= 1.0 || Loops == 1;

    /// <summary>The last loop any token can run (0-based).</summary>
    public int LastLoop => FixedStep >= 0 ? FixedStep : Loops - 1;

    /// <summary>
    /// Resolves <paramref name="mode"/>; null means the config's <c>early_exit_threshold</c> when set, else full depth.
    /// Expected logits need every loop of every token, so they have no adaptive form.
    /// </summary>
    public static ExitRule From(ExitMode? mode, OuroConfig config, string paramName)
    {
        int loops = config.TotalUtSteps;
        mode ??= config.EarlyExitThreshold is { } q ? ExitMode.Q(q) : ExitMode.Last;
        return mode.Kind switch
        {
            ExitKind.LastStep => new ExitRule(1.0, -1, loops),
            ExitKind.QExit => new ExitRule(mode.Threshold, -1, loops),
            ExitKind.FixedStep when mode.Step < loops => new ExitRule(double.NaN, mode.Step, loops),
            ExitKind.FixedStep => throw new ArgumentOutOfRangeException(paramName, mode.Step,
                $"Fixed exit step {mode.Step} is beyond the model's {loops} loops (0-based)."),
            _ => throw new ArgumentOutOfRangeException(paramName, mode,
                "Expected logits mix every loop of every token, so they cannot save compute; use a Q-exit, fixed or last-step mode."),
        };
    }
}
