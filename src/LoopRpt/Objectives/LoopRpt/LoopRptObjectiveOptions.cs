namespace LoopRpt.Objectives;

/// <summary>Which tokens the LoopRPT loss terms average over (docs/method.md §4.1).</summary>
public enum HardTokenMode
{
    /// <summary>
    /// Per sequence of n real tokens, the ⌈(n − 1)(1 − q)⌉ of highest teacher entropy, q = <see cref="LoopRptObjectiveOptions.HardTokenQuantile"/>
    /// (published: top 20%; the authors' strict &gt; the q quantile), plus exact ties with the lowest of them (<see cref="LoopRptMath.HardTokenMask"/>).
    /// </summary>
    TopFraction,
    /// <summary>Tokens whose teacher entropy is at or above <see cref="LoopRptObjectiveOptions.EntropyThreshold"/> nats.</summary>
    EntropyThreshold,
    /// <summary>Every real (non-padding) token.</summary>
    All,
}

/// <summary>The exploration noise injected into the latent state after every loop (docs/method.md §4.6).</summary>
public enum NoiseKind
{
    /// <summary>h + N(0, sigma²) (published).</summary>
    Gaussian,
    /// <summary>Inverted dropout of the latent state with drop probability sigma: h · Bernoulli(1 - sigma) / (1 - sigma).</summary>
    Dropout,
}

/// <summary>Which passes the k3 KL to the EMA teacher is computed on (docs/method.md §4.8).</summary>
public enum KlVariant
{
    /// <summary>Summed over loop steps on every noisy rollout, averaged over rollouts (published).</summary>
    Rollout,
    /// <summary>
    /// On the noise-free student pass, each step's k3 weighted by the detached exit probability p_clean(t) — the KL of
    /// the backbone's expected read-out. (This project's reading of the authors' alternative; not in the paper text.)
    /// </summary>
    BackboneWeighted,
}

/// <summary>
/// Options of <see cref="LoopRptObjective"/>. Defaults are the published LoopRPT values (docs/method.md §4); the
/// optimizer settings (AdamW lr 5e-6, weight decay 0.01, 3% warmup, cosine to 0, clip 1.0) belong to the trainer's
/// <see cref="Training.TrainingStage"/>, whose defaults for a LoopRPT stage are <see cref="Training.OptimizerDefaults.LoopRpt"/>.
/// </summary>
public sealed class LoopRptObjectiveOptions
{
    /// <summary>The published defaults, used by the options and by every factory that exposes these knobs.</summary>
    public static class Defaults
    {
        public const double EmaDecay = 0.995;
        public const HardTokenMode HardTokens = HardTokenMode.TopFraction;
        public const double HardTokenQuantile = 0.8;
        public const double EntropyThreshold = 1.5;
        public const double TeacherQ = 0.5;
        public const double PriceBase = 0.02;
        public const double Kappa = 0.5;
        public const double RewardScale = 1.0;
        public const int Rollouts = 8;
        public const double Sigma = 0.1;
        public const NoiseKind Noise = NoiseKind.Gaussian;
        public const double EntropyBonus = 0.01;
        public const double KlCoef = 0.001;
        public const KlVariant Kl = KlVariant.Rollout;
        public const double KlClamp = 10.0;
        public const int RolloutsPerMicroBatch = 0;
        public const long Seed = 0;
    }

    /// <summary>EMA decay d of the teacher per optimizer step: theta_bar ← d theta_bar + (1 - d) theta. Default 0.995 (published).</summary>
    public double EmaDecay { get; set; } = Defaults.EmaDecay;

    /// <summary>How the hard-token mask is chosen. Default <see cref="HardTokenMode.TopFraction"/> (published).</summary>
    public HardTokenMode HardTokens { get; set; } = Defaults.HardTokens;

    /// <summary>Per-sequence entropy quantile for <see cref="HardTokenMode.TopFraction"/>; 0.8 keeps the top 20% (published).</summary>
    public double HardTokenQuantile { get; set; } = Defaults.HardTokenQuantile;

    /// <summary>Entropy threshold in nats for <see cref="HardTokenMode.EntropyThreshold"/>. Default 1.5 (the paper's Hard bucket).</summary>
    public double EntropyThreshold { get; set; } = Defaults.EntropyThreshold;

    /// <summary>Q-exit threshold that picks the teacher's reference step t_ref. Default 0.5 (published).</summary>
    public double TeacherQ { get; set; } = Defaults.TeacherQ;

    /// <summary>Base time price per loop step. Default 0.02 (published).</summary>
    public double PriceBase { get; set; } = Defaults.PriceBase;

    /// <summary>Difficulty weight kappa of the time price: price = base (1 + kappa (1 - d)). Default 0.5 (published).</summary>
    public double Kappa { get; set; } = Defaults.Kappa;

    /// <summary>Reward scale. Default 1 (published).</summary>
    public double RewardScale { get; set; } = Defaults.RewardScale;

    /// <summary>Noisy latent rollouts G per batch (at least 2: the group advantage needs a spread). Default 8 (published).</summary>
    public int Rollouts { get; set; } = Defaults.Rollouts;

    /// <summary>Noise scale: Gaussian standard deviation, or the drop probability for <see cref="NoiseKind.Dropout"/>. Default 0.1 (published).</summary>
    public double Sigma { get; set; } = Defaults.Sigma;

    /// <summary>Kind of latent noise. Default <see cref="NoiseKind.Gaussian"/> (published).</summary>
    public NoiseKind Noise { get; set; } = Defaults.Noise;

    /// <summary>Weight of the exit-entropy bonus on the clean pass. Default 0.01 (published).</summary>
    public double EntropyBonus { get; set; } = Defaults.EntropyBonus;

    /// <summary>Weight of the k3 KL to the teacher. Default 0.001 (published).</summary>
    public double KlCoef { get; set; } = Defaults.KlCoef;

    /// <summary>Which passes the KL is computed on. Default <see cref="KlVariant.Rollout"/> (published).</summary>
    public KlVariant Kl { get; set; } = Defaults.Kl;

    /// <summary>Each k3 term is clamped to [-KlClamp, KlClamp]. Default 10 (published).</summary>
    public double KlClamp { get; set; } = Defaults.KlClamp;

    /// <summary>
    /// Rollouts whose activations are alive at once. 0 (default) or ≥ <see cref="Rollouts"/>: all G in one graph.
    /// Smaller values bound activation memory to about (1 + RolloutsPerMicroBatch) forward passes, at the cost of one
    /// extra no-grad forward per rollout (the rewards of the whole group must be known before any backward);
    /// see docs/looprpt.md for the memory formula.
    /// </summary>
    public int RolloutsPerMicroBatch { get; set; } = Defaults.RolloutsPerMicroBatch;

    /// <summary>Seed of the rollout noise and exit sampling; each (step, micro-batch, rollout) gets its own generator. Default 0.</summary>
    public long Seed { get; set; } = Defaults.Seed;

    /// <summary>A copy (the objective keeps its own, so later edits of the caller's options do not leak in).</summary>
    public LoopRptObjectiveOptions Clone() => (LoopRptObjectiveOptions)MemberwiseClone();

    internal int ChunkSize => RolloutsPerMicroBatch <= 0 || RolloutsPerMicroBatch >= Rollouts ? Rollouts : RolloutsPerMicroBatch;

    internal void Validate()
    {
        if (!(EmaDecay is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(EmaDecay), EmaDecay, "EmaDecay must lie in [0, 1].");
        if (!Enum.IsDefined(HardTokens)) throw new ArgumentOutOfRangeException(nameof(HardTokens), HardTokens, "Unknown hard-token mode.");
        if (!(HardTokenQuantile is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(HardTokenQuantile), HardTokenQuantile, "HardTokenQuantile must lie in [0, 1) (0.8 keeps the top 20%).");
        if (!(EntropyThreshold >= 0) || double.IsInfinity(EntropyThreshold)) throw new ArgumentOutOfRangeException(nameof(EntropyThreshold), EntropyThreshold, "EntropyThreshold must be a non-negative number of nats.");
        if (!(TeacherQ is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(TeacherQ), TeacherQ, "TeacherQ must lie in [0, 1].");
        if (!(PriceBase >= 0) || double.IsInfinity(PriceBase)) throw new ArgumentOutOfRangeException(nameof(PriceBase), PriceBase, "PriceBase must be non-negative and finite.");
        if (!(Kappa >= 0) || double.IsInfinity(Kappa)) throw new ArgumentOutOfRangeException(nameof(Kappa), Kappa, "Kappa must be non-negative and finite.");
        if (!(RewardScale > 0) || double.IsInfinity(RewardScale)) throw new ArgumentOutOfRangeException(nameof(RewardScale), RewardScale, "RewardScale must be positive and finite.");
        if (Rollouts < 2) throw new ArgumentOutOfRangeException(nameof(Rollouts), Rollouts, "Rollouts must be at least 2 (the group advantage normalizes over rollouts).");
        if (!Enum.IsDefined(Noise)) throw new ArgumentOutOfRangeException(nameof(Noise), Noise, "Unknown noise kind.");
        if (Noise == NoiseKind.Gaussian && (!(Sigma >= 0) || double.IsInfinity(Sigma))) throw new ArgumentOutOfRangeException(nameof(Sigma), Sigma, "Sigma (Gaussian noise std) must be non-negative and finite.");
        if (Noise == NoiseKind.Dropout && !(Sigma is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(Sigma), Sigma, "Sigma (dropout probability) must lie in [0, 1).");
        if (!(EntropyBonus >= 0) || double.IsInfinity(EntropyBonus)) throw new ArgumentOutOfRangeException(nameof(EntropyBonus), EntropyBonus, "EntropyBonus must be non-negative and finite.");
        if (!(KlCoef >= 0) || double.IsInfinity(KlCoef)) throw new ArgumentOutOfRangeException(nameof(KlCoef), KlCoef, "KlCoef must be non-negative and finite.");
        if (!Enum.IsDefined(Kl)) throw new ArgumentOutOfRangeException(nameof(Kl), Kl, "Unknown KL variant.");
        if (!(KlClamp > 0)) throw new ArgumentOutOfRangeException(nameof(KlClamp), KlClamp, "KlClamp must be positive.");
        if (RolloutsPerMicroBatch < 0) throw new ArgumentOutOfRangeException(nameof(RolloutsPerMicroBatch), RolloutsPerMicroBatch, "RolloutsPerMicroBatch must be non-negative (0: all rollouts at once).");
    }
}
