using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>How an inference pass chooses the loop step to read out (docs/method.md §2).</summary>
public enum ExitKind
{
    /// <summary>Always the last loop (full depth).</summary>
    LastStep,
    /// <summary>A fixed loop step k (0-based).</summary>
    FixedStep,
    /// <summary>Per token, the first step whose exit CDF reaches q.</summary>
    QExit,
    /// <summary>sum_t p(t) logits[t] (every loop is computed).</summary>
    ExpectedLogits,
}

/// <summary>An exit rule. Use the factory members: <see cref="Last"/>, <see cref="Fixed"/>, <see cref="Q"/>, <see cref="Expected"/>.</summary>
public sealed record ExitMode
{
    private ExitMode(ExitKind kind, int step, double threshold)
    {
        Kind = kind;
        Step = step;
        Threshold = threshold;
    }

    public ExitKind Kind { get; }

    /// <summary>The step for <see cref="ExitKind.FixedStep"/> (0-based).</summary>
    public int Step { get; }

    /// <summary>The threshold q for <see cref="ExitKind.QExit"/>.</summary>
    public double Threshold { get; }

    public static ExitMode Last { get; } = new(ExitKind.LastStep, -1, 1.0);

    public static ExitMode Expected { get; } = new(ExitKind.ExpectedLogits, -1, double.NaN);

    public static ExitMode Fixed(int step) => step >= 0
        ? new(ExitKind.FixedStep, step, double.NaN)
        : throw new ArgumentOutOfRangeException(nameof(step), step, "The fixed exit step must be non-negative (0-based).");

    public static ExitMode Q(double q) => q is >= 0 and <= 1
        ? new(ExitKind.QExit, -1, q)
        : throw new ArgumentOutOfRangeException(nameof(q), q, "The Q-exit threshold q must lie in [0, 1].");

    /// <summary>Per-token exit steps (B, S) int64 for this rule, given the exit distribution (B, S, T).</summary>
    public Tensor Steps(Tensor exitProbabilities)
    {
        long T = exitProbabilities.shape[^1];
        var shape = exitProbabilities.shape[..^1];
        return Kind switch
        {
            ExitKind.LastStep => HeldScalars.Full(shape, T - 1, ScalarType.Int64, exitProbabilities.device),
            ExitKind.FixedStep when Step < T => HeldScalars.Full(shape, Step, ScalarType.Int64, exitProbabilities.device),
            ExitKind.FixedStep => throw new ArgumentOutOfRangeException(nameof(Step), Step, $"Fixed exit step {Step} is beyond the model's {T} loops."),
            ExitKind.QExit => ExitDistribution.QExitStep(exitProbabilities, Threshold),
            _ => throw new InvalidOperationException("Expected logits mix every step; there is no single exit step."),
        };
    }

    /// <summary>Logits (B, S, V) under this rule.</summary>
    public Tensor Logits(OuroForCausalLM lm, LoopOutput output) => Kind switch
    {
        ExitKind.ExpectedLogits => lm.ExpectedLogits(output),
        ExitKind.LastStep => lm.Logits(output.Hidden[^1]),
        ExitKind.FixedStep => lm.Logits(output.Hidden[(int)Math.Min(Step, output.Steps - 1L)]),
        _ => lm.LogitsAtSteps(output, Steps(output.ExitProbabilities())),
    };

    /// <summary>
    /// The rule in words: <c>last</c>, <c>expected</c>, <c>q-exit(q=Q)</c>, <c>fixed(step=N)</c> (numbers in the invariant
    /// culture); <see cref="Parse"/> reads it back.
    /// </summary>
    public override string ToString() => Kind switch
    {
        ExitKind.QExit => string.Create(CultureInfo.InvariantCulture, $"q-exit(q={Threshold})"),
        ExitKind.FixedStep => string.Create(CultureInfo.InvariantCulture, $"fixed(step={Step})"),
        ExitKind.ExpectedLogits => "expected",
        _ => "last",
    };

    /// <summary>
    /// The rule named by <paramref name="text"/>, case-insensitive: the configuration forms <c>last</c>, <c>expected</c>,
    /// <c>q:Q</c> (Q in [0, 1]) and <c>step:N</c> (0-based, N ≥ 0), and what <see cref="ToString"/> prints
    /// (<c>q-exit(q=Q)</c>, <c>fixed(step=N)</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The text is none of these; the message names the accepted forms.</exception>
    public static ExitMode Parse(string text) => TryParse(text, out var mode) ? mode
        : throw new ArgumentException($"'{text}' is not an exit rule; expected 'last', 'expected', 'q:Q' with Q in [0, 1], or 'step:N' with N >= 0.", nameof(text));

    /// <summary>Like <see cref="Parse"/>, returning false instead of throwing.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out ExitMode? mode)
    {
        mode = null;
        var t = (text ?? "").Trim().ToLowerInvariant();
        if (t == "last") mode = Last;
        else if (t == "expected") mode = Expected;
        else if ((Argument(t, "q:", "") ?? Argument(t, "q-exit(q=", ")")) is { } qText)
        {
            if (double.TryParse(qText, NumberStyles.Float, CultureInfo.InvariantCulture, out var q) && q is >= 0 and <= 1) mode = Q(q);
        }
        else if ((Argument(t, "step:", "") ?? Argument(t, "fixed(step=", ")")) is { } kText)
        {
            if (int.TryParse(kText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var k) && k >= 0) mode = Fixed(k);
        }
        return mode is not null;
    }

    /// <summary>What stands between <paramref name="prefix"/> and <paramref name="suffix"/>, or null when <paramref name="t"/> is not so framed.</summary>
    private static string? Argument(string t, string prefix, string suffix)
        => t.Length > prefix.Length + suffix.Length && t.StartsWith(prefix, StringComparison.Ordinal) && t.EndsWith(suffix, StringComparison.Ordinal)
            ? t[prefix.Length..^suffix.Length] : null;
}
