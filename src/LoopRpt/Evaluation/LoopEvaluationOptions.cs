namespace LoopRpt.Evaluation;

/// <summary>Options of <see cref="LoopEvaluator"/> (docs/method.md §5).</summary>
public sealed class LoopEvaluationOptions
{
    /// <summary>The paper's bucket thresholds and a default q sweep.</summary>
    public static class Defaults
    {
        public const double EasyThreshold = 0.5;
        public const double MediumThreshold = 1.0;
        public const double HardThreshold = 1.5;

        /// <summary>q values swept for the Pareto curve (q = 1 is the last step).</summary>
        public static IReadOnlyList<double> QValues { get; } = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

        /// <summary>The few q values a summary table shows (<c>looprpt evaluate</c>'s default): 0.5, 0.7, 0.9 and 1.</summary>
        public static IReadOnlyList<double> TableQValues { get; } = [0.5, 0.7, 0.9, 1.0];
    }

    /// <summary>Q-exit thresholds to evaluate, each in [0, 1]. Default 0.05 … 1.0 (12 values, including 0.5 and 0.7).</summary>
    public IReadOnlyList<double> QValues { get; set; } = Defaults.QValues;

    /// <summary>
    /// Where the Q-exit figures come from: <see cref="EvaluationPass.FullDepth"/> (default; every loop, then select: the
    /// paper's protocol) or <see cref="EvaluationPass.Adaptive"/> (the compute-saving scorer, one pass per q).
    /// </summary>
    public EvaluationPass Pass { get; set; } = EvaluationPass.FullDepth;

    /// <summary>
    /// The Easy ⊇ Medium ⊇ Hard buckets: entropy thresholds (default <see cref="EntropyBuckets.Published"/>, 0.5 / 1.0 /
    /// 1.5 nats) or the top fractions of the evaluated tokens by entropy (<see cref="EntropyBuckets.TopFractions"/>).
    /// </summary>
    public EntropyBuckets Buckets { get; set; } = EntropyBuckets.Published;

    /// <summary>"Easy" bucket: base-model entropy above this many nats. Default 0.5 (published). Sets <see cref="Buckets"/> to thresholds.</summary>
    public double EasyThreshold { get => Thresholds.Easy; set => Buckets = Thresholds with { Easy = value }; }

    /// <summary>"Medium" bucket: entropy above this. Default 1.0 (published). Sets <see cref="Buckets"/> to thresholds.</summary>
    public double MediumThreshold { get => Thresholds.Medium; set => Buckets = Thresholds with { Medium = value }; }

    /// <summary>"Hard" bucket: entropy above this. Default 1.5 (published). Sets <see cref="Buckets"/> to thresholds.</summary>
    public double HardThreshold { get => Thresholds.Hard; set => Buckets = Thresholds with { Hard = value }; }

    private EntropyBuckets Thresholds => Buckets?.Rule == BucketRule.EntropyThreshold ? Buckets : EntropyBuckets.Published;

    internal void Validate()
    {
        if (QValues is null || QValues.Count == 0) throw new ArgumentException("QValues needs at least one q in [0, 1].", nameof(QValues));
        foreach (var q in QValues)
            if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(QValues), q, "Every Q-exit threshold must lie in [0, 1].");
        if (!Enum.IsDefined(Pass)) throw new ArgumentOutOfRangeException(nameof(Pass), Pass, "Pass must be FullDepth or Adaptive.");
        if (Buckets is null) throw new ArgumentException("Buckets must not be null.", nameof(Buckets));
        Buckets.Validate();
    }
}
