using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// A token bucket by the scored model's next-token entropy at its exit (the <c>TokenEntropies</c> column): by default one
/// of the method's nested buckets (<see cref="Evaluation.EntropyBuckets"/>: <see cref="Name"/> All, Easy, Medium or Hard,
/// the tokens with entropy above <see cref="Lower"/>; <see cref="Upper"/> is +∞), or, with explicit disjoint edges, the
/// tokens whose entropy lies in [<see cref="Lower"/>, <see cref="Upper"/>).
/// </summary>
public sealed record EntropyBucket(double Lower, double Upper, long Tokens, double Accuracy, double MeanExitStep, double NegativeLogLikelihood)
{
    private readonly string? _label;

    /// <summary>All, Easy, Medium, Hard (nested buckets), or Range1, Range2, … (disjoint edges, lowest entropy first).</summary>
    public string Name { get; init; } = "";

    /// <summary>
    /// What the bucket holds, in words: "H &lt; 0.5 nats", "0.5 ≤ H &lt; 1 nats", "H ≥ 4 nats"; with top-fraction buckets
    /// also the share of tokens, e.g. "top 20 % (H ≥ 2.31 nats)".
    /// </summary>
    public string Label { get => _label ?? Range(Lower, Upper); init => _label = value; }

    internal static string Range(double lower, double upper)
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        if (lower <= 0 && double.IsPositiveInfinity(upper)) return "all tokens";
        if (lower <= 0) return string.Create(c, $"H < {upper:0.##} nats");
        if (double.IsPositiveInfinity(upper)) return string.Create(c, $"H ≥ {lower:0.##} nats");
        return string.Create(c, $"{lower:0.##} ≤ H < {upper:0.##} nats");
    }
}

/// <summary>Metrics of scored data (<see cref="LoopRptCatalog.Evaluate"/>); every mean is over predicted tokens.</summary>
public sealed class LoopRptMetrics
{
    /// <summary>Rows evaluated.</summary>
    public required long Rows { get; init; }
    /// <summary>Predicted tokens (positions 1..n-1 of every row).</summary>
    public required long Tokens { get; init; }
    /// <summary>Next-token accuracy under the scorer's exit rule.</summary>
    public required double Accuracy { get; init; }
    /// <summary>Next-token accuracy reading out at each loop step t = 1..T (empty if the scorer ran without per-step statistics).</summary>
    public required double[] StepAccuracy { get; init; }
    /// <summary>Mean 1-indexed exit step.</summary>
    public required double MeanExitStep { get; init; }
    /// <summary>Loop compute relative to full depth.</summary>
    public required double ComputeFraction { get; init; }
    /// <summary>Mean -log p(token) in nats.</summary>
    public required double NegativeLogLikelihood { get; init; }
    /// <summary>exp(<see cref="NegativeLogLikelihood"/>).</summary>
    public double Perplexity => Math.Exp(NegativeLogLikelihood);
    /// <summary>
    /// Per entropy bucket: tokens, accuracy, mean exit step, NLL. By default the method's nested buckets All ⊇ Easy ⊇
    /// Medium ⊇ Hard, as <c>looprpt evaluate</c> reports them.
    /// </summary>
    public required IReadOnlyList<EntropyBucket> EntropyBuckets { get; init; }

    /// <inheritdoc/>
    public override string ToString()
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        return string.Create(c, $"rows={Rows} tokens={Tokens} accuracy={Accuracy:F4} step_accuracy=[{string.Join(",", StepAccuracy.Select(a => a.ToString("F4", c)))}] " +
                                $"mean_exit_step={MeanExitStep:F3} compute_fraction={ComputeFraction:F3} nll={NegativeLogLikelihood:F4} ppl={Perplexity:F2}");
    }
}

/// <summary>One exit threshold of a Pareto sweep.</summary>
public sealed record ParetoPoint(double Threshold, double Accuracy, double NegativeLogLikelihood, double MeanExitStep, double ComputeFraction, bool IsParetoOptimal);
