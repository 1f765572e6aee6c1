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
    }

    /// <summary>Q-exit thresholds to evaluate, each in [0, 1]. Default 0.05 … 1.0 (12 values, including 0.5 and 0.7).</summary>
    public IReadOnlyList<double> QValues { get; set; } = Defaults.QValues;

    /// <summary>"Easy" bucket: base-model entropy above this many nats. Default 0.5 (published).</summary>
    public double EasyThreshold { get; set; } = Defaults.EasyThreshold;

    /// <summary>"Medium" bucket: entropy above this. Default 1.0 (published).</summary>
    public double MediumThreshold { get; set; } = Defaults.MediumThreshold;

    /// <summary>"Hard" bucket: entropy above this. Default 1.5 (published).</summary>
    public double HardThreshold { get; set; } = Defaults.HardThreshold;

    internal void Validate()
    {
        if (QValues is null || QValues.Count == 0) throw new ArgumentException("QValues needs at least one q in [0, 1].", nameof(QValues));
        foreach (var q in QValues)
            if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(QValues), q, "Every Q-exit threshold must lie in [0, 1].");
        foreach (var (name, v) in new[] { (nameof(EasyThreshold), EasyThreshold), (nameof(MediumThreshold), MediumThreshold), (nameof(HardThreshold), HardThreshold) })
            if (!(v >= 0) || double.IsInfinity(v)) throw new ArgumentOutOfRangeException(name, v, $"{name} must be a non-negative number of nats.");
    }
}
