using System.Globalization;
using LoopRpt.Model;

namespace LoopRpt.Evaluation;

/// <summary>How <see cref="LoopEvaluator"/> picks its Easy ⊇ Medium ⊇ Hard tokens from the base model's entropy.</summary>
public enum BucketRule
{
    /// <summary>Entropy above fixed thresholds in nats (the method's buckets: 0.5, 1.0, 1.5).</summary>
    EntropyThreshold,
    /// <summary>
    /// The highest-entropy fractions of the evaluated tokens (e.g. the top 50 %, 30 %, 20 %), LoopRPT's own hard-token
    /// rule: buckets that mean something whatever the model's size, where fixed thresholds put almost every token of a
    /// small model above 0.5 nats.
    /// </summary>
    TopFraction,
}

/// <summary>
/// The three nested buckets of <see cref="LoopEvaluator"/> (besides All): Easy ⊇ Medium ⊇ Hard, each the tokens whose
/// base-model entropy is above a threshold (<see cref="BucketRule.EntropyThreshold"/>: <see cref="Easy"/>,
/// <see cref="Medium"/>, <see cref="Hard"/> in nats, increasing) or among the highest-entropy fraction of the evaluation
/// set (<see cref="BucketRule.TopFraction"/>: fractions in (0, 1], decreasing). Text form (<see cref="Parse"/>,
/// <see cref="ToString"/>): <c>entropy:0.5,1,1.5</c> or <c>top:50,30,20</c> (percent).
/// </summary>
public sealed record EntropyBuckets(BucketRule Rule, double Easy, double Medium, double Hard)
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>The method's buckets: entropy above 0.5, 1.0 and 1.5 nats (docs/method.md §5). The default.</summary>
    public static EntropyBuckets Published { get; } = new(BucketRule.EntropyThreshold, LoopEvaluationOptions.Defaults.EasyThreshold,
        LoopEvaluationOptions.Defaults.MediumThreshold, LoopEvaluationOptions.Defaults.HardThreshold);

    /// <summary>The top 50 %, 30 % and 20 % of tokens by base-model entropy (20 %: LoopRPT's hard tokens).</summary>
    public static EntropyBuckets TopFractions { get; } = new(BucketRule.TopFraction, 0.5, 0.3, 0.2);

    /// <summary>The three bounds in bucket order (Easy, Medium, Hard).</summary>
    public IReadOnlyList<double> Bounds => [Easy, Medium, Hard];

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless thresholds increase (≥ 0) or fractions decrease (in (0, 1]).</summary>
    public void Validate()
    {
        var b = Bounds;
        if (Rule == BucketRule.EntropyThreshold)
        {
            foreach (var v in b)
                if (!(v >= 0) || double.IsInfinity(v)) throw new ArgumentOutOfRangeException(nameof(Easy), v, "Entropy thresholds must be non-negative numbers of nats.");
            if (!(Easy <= Medium && Medium <= Hard)) throw new ArgumentOutOfRangeException(nameof(Medium), Medium, $"Entropy thresholds must not decrease (Easy ≤ Medium ≤ Hard); got {this}.");
        }
        else if (Rule == BucketRule.TopFraction)
        {
            foreach (var v in b)
                if (!(v is > 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(Easy), v, "Top fractions must lie in (0, 1].");
            if (!(Easy >= Medium && Medium >= Hard)) throw new ArgumentOutOfRangeException(nameof(Medium), Medium, $"Top fractions must not increase (Easy ⊇ Medium ⊇ Hard); got {this}.");
        }
        else throw new ArgumentOutOfRangeException(nameof(Rule), Rule, "Unknown bucket rule.");
    }

    /// <summary>
    /// Reads <c>entropy:A,B,C</c> (nats; <c>entropy</c> alone: 0.5,1,1.5) or <c>top:A,B,C</c> (percent of tokens;
    /// <c>top</c> alone: 50,30,20). Throws <see cref="FormatException"/> naming what is wrong.
    /// </summary>
    public static EntropyBuckets Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var (kind, rest) = spec.IndexOf(':') is var i and >= 0 ? (spec[..i].Trim().ToLowerInvariant(), spec[(i + 1)..]) : (spec.Trim().ToLowerInvariant(), null);
        var defaults = kind switch
        {
            "entropy" or "nats" => Published,
            "top" or "quantile" or "quantiles" => TopFractions,
            _ => throw new FormatException($"Unknown bucket rule '{kind}' in '{spec}'; expected entropy:A,B,C (nats) or top:A,B,C (percent of tokens)."),
        };
        if (rest is null) return defaults;
        var parts = rest.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 3) throw new FormatException($"'{spec}' needs three values, for Easy, Medium and Hard (e.g. {defaults}).");
        var v = parts.Select(p => double.TryParse(p.TrimEnd('%'), NumberStyles.Float, C, out var x) ? x : throw new FormatException($"'{p}' in '{spec}' is not a number.")).ToArray();
        if (defaults.Rule == BucketRule.TopFraction) v = v.Select(x => x / 100).ToArray();
        var buckets = new EntropyBuckets(defaults.Rule, v[0], v[1], v[2]);
        try
        {
            buckets.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new FormatException($"'{spec}': {e.Message.Split(" (Parameter")[0].Split(Environment.NewLine)[0]}", e);
        }
        return buckets;
    }

    /// <summary><c>entropy:0.5,1,1.5</c> or <c>top:50,30,20</c>: the form <see cref="Parse"/> reads.</summary>
    public override string ToString() => Rule == BucketRule.TopFraction
        ? string.Create(C, $"top:{Easy * 100:0.###},{Medium * 100:0.###},{Hard * 100:0.###}")
        : string.Create(C, $"entropy:{Easy:0.###},{Medium:0.###},{Hard:0.###}");

    /// <summary>Bucket names in result order: All, then the three nested buckets.</summary>
    public static IReadOnlyList<string> Names { get; } = ["All", "Easy", "Medium", "Hard"];

    /// <summary>
    /// The entropy cut of each nested bucket (a token is in it when its entropy is above the cut): the thresholds as they
    /// are, or for top fractions cut points over <paramref name="entropies"/>, the entropies of every evaluated token (read
    /// only then): midway between the ⌈f·N⌉-th highest entropy and the next (below the lowest when f = 1), so that
    /// "&gt; cut" takes those ⌈f·N⌉ tokens and ties at a cut fall outside. No tokens: +∞ (empty buckets).
    /// </summary>
    public double[] Cuts(Func<double[]> entropies)
    {
        ArgumentNullException.ThrowIfNull(entropies);
        if (Rule == BucketRule.EntropyThreshold) return [.. Bounds];
        var sorted = entropies();
        Array.Sort(sorted, (a, b) => b.CompareTo(a));                                              // descending
        long n = sorted.Length;
        if (n == 0) return [.. Bounds.Select(_ => double.PositiveInfinity)];
        return Bounds.Select(f =>
        {
            long k = Math.Clamp((long)Math.Ceiling(f * n - 1e-9), 1, n);
            return k >= n ? sorted[n - 1] - 1 : (sorted[k - 1] + sorted[k]) / 2;
        }).ToArray();
    }

    /// <summary>
    /// Membership (1 + cuts, N) float64 of N tokens: row 0 is every real token (All), row i the real tokens whose
    /// <paramref name="entropy"/> is above <paramref name="cuts"/>[i - 1].
    /// </summary>
    public static TorchSharp.torch.Tensor Masks(TorchSharp.torch.Tensor entropy, TorchSharp.torch.Tensor real, IReadOnlyList<double> cuts)
    {
        ArgumentNullException.ThrowIfNull(entropy);
        ArgumentNullException.ThrowIfNull(real);
        ArgumentNullException.ThrowIfNull(cuts);
        // Compared in float64: a cut midway between two float32 entropies one ulp apart must not round onto either.
        var r = real.to_type(TorchSharp.torch.ScalarType.Float64);
        var h = entropy.to_type(TorchSharp.torch.ScalarType.Float64);
        return TorchSharp.torch.stack(new[] { r }.Concat(cuts.Select(c => r * h.GreaterThan(c).to_type(TorchSharp.torch.ScalarType.Float64))).ToArray(), 0);
    }

    /// <summary>
    /// A plain label for a bucket: "all tokens", "H > 0.5 nats", or "top 20 % (H > 2.314 nats)" where 2.314 is the
    /// entropy the fraction came to on the evaluated tokens (<see cref="BucketEvaluation.MinEntropy"/>).
    /// </summary>
    public static string Label(BucketEvaluation bucket)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        return Label(bucket.Name, bucket.MinEntropy, bucket.TopFraction);
    }

    /// <summary>The label of bucket <paramref name="name"/> with cut <paramref name="minEntropy"/> (see <see cref="Label(BucketEvaluation)"/>).</summary>
    public static string Label(string name, double minEntropy, double? topFraction)
    {
        if (name == "All") return "all tokens";
        return topFraction is { } f
            ? string.Create(C, $"top {100 * f:0.#} % (H > {Nats(minEntropy)} nats)")
            : string.Create(C, $"H > {minEntropy:0.##} nats");
    }

    /// <summary>Three decimals, or three significant digits below 0.001 (a confident model's quantiles are tiny: "H > 0" would mislead).</summary>
    private static string Nats(double v) => v is 0 or >= 0.001 || double.IsNaN(v) ? v.ToString("0.###", C) : v.ToString("0.##E+0", C);
}
