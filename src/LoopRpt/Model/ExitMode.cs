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
            ExitKind.LastStep => full(shape, T - 1, dtype: ScalarType.Int64, device: exitProbabilities.device),
            ExitKind.FixedStep when Step < T => full(shape, Step, dtype: ScalarType.Int64, device: exitProbabilities.device),
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

    public override string ToString() => Kind switch
    {
        ExitKind.QExit => $"q-exit(q={Threshold})",
        ExitKind.FixedStep => $"fixed(step={Step})",
        ExitKind.ExpectedLogits => "expected",
        _ => "last",
    };
}
