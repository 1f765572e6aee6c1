namespace LoopRpt.Training;

/// <summary>What <see cref="LossSpikeRule.Observe"/> made of one logged loss.</summary>
public enum SpikeVerdict
{
    /// <summary>At or below <see cref="LossSpikeRule.AdmissionBound"/> (or the first value, which only sets the baseline): it enters the window and the streak ends.</summary>
    Sane,
    /// <summary>Between <see cref="LossSpikeRule.AdmissionBound"/> and the threshold: not a spike (the streak ends), but kept out of the window.</summary>
    Elevated,
    /// <summary>Above the threshold (or not finite), but fewer than <see cref="LossSpikeRule.Patience"/> times in a row.</summary>
    Spike,
    /// <summary>Above the threshold <see cref="LossSpikeRule.Patience"/> times in a row: training has diverged.</summary>
    Diverged,
}

/// <summary>
/// The loss-spike rule of <see cref="LoopedLmTrainer"/>: a logged loss is a <i>spike</i> when it is not finite or exceeds
/// the threshold <c>max(Factor × m, m + MinimumRise)</c>, where m is the median of the last <see cref="Window"/> sane
/// logged losses; <see cref="Patience"/> spikes in a row mean the run diverged. The absolute margin
/// (<see cref="MinimumRise"/>, 1 nat) keeps a loss that is already small (a memorized corpus, the gate's BCE) from
/// tripping the ratio on noise; the ratio scales the rule to any loss level.
/// <para>Only <i>sane</i> values, at most <c>max(√Factor × m, m + MinimumRise / 2)</c> (<see cref="AdmissionBound"/>),
/// enter the window. A value between that bound and the threshold is <i>elevated</i>: not a spike, but kept out, so a
/// loss that climbs from report to report (each step less than Factor × the last) cannot drag the median up with it —
/// which a window of only a few values early in a stage would otherwise allow.</para>
/// </summary>
/// <remarks>
/// The trainer feeds it the mean of the objective's <see cref="Objectives.ITrainingObjective.SpikeMetric"/> over each
/// logging interval (values it reads to the host anyway) and seeds the window with the loss of a stage's first step, so
/// a run that blows up within its first interval is still caught. With the defaults (3 ×, 3 reports, a window of 20) a
/// healthy run does not trip it: a falling loss never does, and noise would have to triple the running median three
/// reports in a row.
/// </remarks>
public sealed class LossSpikeRule
{
    /// <summary>The absolute margin (nats): a loss within this of the median is never a spike, whatever the factor.</summary>
    public const double MinimumRise = 1.0;

    private readonly List<double> _window = [];

    /// <summary>A rule; <paramref name="factor"/> 0 disables it (every value is then <see cref="SpikeVerdict.Sane"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">factor is neither 0 nor above 1, patience or window below 1.</exception>
    public LossSpikeRule(double factor, int patience, int window, IEnumerable<double>? history = null)
    {
        Check(factor, patience, window);
        Factor = factor;
        Patience = patience;
        Window = window;
        foreach (var v in history ?? []) Add(v);
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first impossible setting.</summary>
    public static void Check(double factor, int patience, int window)
    {
        if (!(factor == 0 || (factor > 1 && double.IsFinite(factor))))
            throw new ArgumentOutOfRangeException(nameof(factor), factor, "The spike factor must be 0 (rule off) or a finite number above 1.");
        if (patience < 1) throw new ArgumentOutOfRangeException(nameof(patience), patience, "The spike patience must be at least 1.");
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), window, "The spike window must be at least 1.");
    }

    public double Factor { get; }
    public int Patience { get; }
    public int Window { get; }

    /// <summary>False when <see cref="Factor"/> is 0.</summary>
    public bool Enabled => Factor > 0;

    /// <summary>True while the window is empty (the first value only sets the baseline).</summary>
    public bool NeedsBaseline => _window.Count == 0;

    /// <summary>Spikes in a row so far.</summary>
    public int Streak { get; private set; }

    /// <summary>The spikes of the current streak, oldest first.</summary>
    public IReadOnlyList<double> StreakValues => _streakValues;
    private readonly List<double> _streakValues = [];

    /// <summary>The sane values in the window, oldest first (checkpointed so a resumed run judges as a straight one).</summary>
    public IReadOnlyList<double> History => _window;

    /// <summary>Median of the window; NaN while it is empty.</summary>
    public double Median
    {
        get
        {
            if (_window.Count == 0) return double.NaN;
            var sorted = _window.Order().ToArray();
            int n = sorted.Length;
            return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
        }
    }

    /// <summary>A value above this is a spike: <c>max(Factor × median, median + MinimumRise)</c>; +∞ while disabled or without a baseline.</summary>
    public double Threshold => !Enabled || _window.Count == 0 ? double.PositiveInfinity : Math.Max(Factor * Median, Median + MinimumRise);

    /// <summary>Values at or below this enter the window: <c>max(√Factor × median, median + MinimumRise / 2)</c>; +∞ while disabled or without a baseline.</summary>
    public double AdmissionBound => !Enabled || _window.Count == 0 ? double.PositiveInfinity : Math.Max(Math.Sqrt(Factor) * Median, Median + MinimumRise / 2);

    /// <summary>True when <paramref name="value"/> would count as a spike now (no state changes).</summary>
    public bool IsSpike(double value) => Enabled && _window.Count > 0 && (!double.IsFinite(value) || value > Threshold);

    /// <summary>Sets the baseline from a value that is not itself judged (the loss of a stage's first step); non-finite values are ignored.</summary>
    public void Seed(double value)
    {
        if (Enabled && double.IsFinite(value)) Add(value);
    }

    /// <summary>Judges one logged value and updates the window and the streak.</summary>
    public SpikeVerdict Observe(double value)
    {
        if (!Enabled) return SpikeVerdict.Sane;
        if (_window.Count == 0)
        {
            Seed(value);       // nothing to compare with yet: the first finite value is the baseline
            return SpikeVerdict.Sane;
        }
        if (IsSpike(value))
        {
            Streak++;
            _streakValues.Add(value);
            return Streak >= Patience ? SpikeVerdict.Diverged : SpikeVerdict.Spike;
        }
        Streak = 0;
        _streakValues.Clear();
        if (value > AdmissionBound) return SpikeVerdict.Elevated;
        Add(value);
        return SpikeVerdict.Sane;
    }

    private void Add(double value)
    {
        if (!double.IsFinite(value)) return;
        _window.Add(value);
        if (_window.Count > Window) _window.RemoveAt(0);
    }
}
