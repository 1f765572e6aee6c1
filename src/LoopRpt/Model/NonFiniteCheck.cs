using System.Globalization;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Scores, evaluations and generations are refused rather than reported when the numbers behind them are not finite:
/// a model with NaN weights (one saved from a diverged run, say) otherwise "scores" NaN or, through argmax, plausible
/// looking garbage. Every surface that reads results to the host checks them there (no extra synchronization) and throws
/// <see cref="Outputs"/>'s <see cref="NotFiniteNumberException"/>.
/// </summary>
public static class NonFiniteCheck
{
    /// <summary>Names of the parameters holding NaN or ±Inf, in parameter order (one host read for the whole model).</summary>
    public static IReadOnlyList<string> Parameters(OuroForCausalLM lm)
    {
        ArgumentNullException.ThrowIfNull(lm);
        var ps = lm.UniqueParameters();
        if (ps.Count == 0) return [];
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var bad = stack(ps.Select(p => p.Param.isfinite().all().logical_not()).ToArray()).cpu().data<bool>().ToArray();
        return ps.Where((_, i) => bad[i]).Select(p => p.Name).ToList();
    }

    /// <summary>
    /// The exception for non-finite <paramref name="what"/> (e.g. "log-probabilities") of <paramref name="lm"/>, naming the
    /// parameters that hold NaN/Inf when there are any (else the activations overflowed).
    /// </summary>
    public static NotFiniteNumberException Outputs(OuroForCausalLM lm, string what)
    {
        var bad = Parameters(lm);
        return new NotFiniteNumberException($"The model's {what} are not finite (NaN or ±Inf), so no result is reported. " + Diagnosis(bad, lm.DType));
    }

    /// <summary>The exception for a model whose weights hold NaN/Inf (<paramref name="bad"/> from <see cref="Parameters"/>).</summary>
    public static NotFiniteNumberException Weights(IReadOnlyList<string> bad, string source)
        => new($"The weights of '{source}' are not finite (NaN or ±Inf); its scores would be meaningless. " + Diagnosis(bad, null));

    private static string Diagnosis(IReadOnlyList<string> bad, ScalarType? dtype)
    {
        if (bad.Count == 0)
            return "Its weights are finite, so an activation overflowed" + (dtype == ScalarType.Float32 ? "." : "; try float32.");
        var names = string.Join(", ", bad.Take(3)) + (bad.Count > 3 ? string.Create(CultureInfo.InvariantCulture, $", ... ({bad.Count} tensors)") : "");
        return $"Non-finite weights in {names}: the model is broken (saved from a diverged run?); use an earlier checkpoint.";
    }
}
