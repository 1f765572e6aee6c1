using System.Globalization;
using System.Text;
using LoopRpt.Checkpoints;
using LoopRpt.Evaluation;
using LoopRpt.Training;

namespace LoopRpt.Experiments;

/// <summary>Loop t's accuracy gain over loop 1 on the base model(s), and whether it is beyond the noise.</summary>
/// <param name="Step">The loop step t (2..T).</param>
/// <param name="Gain">acc_t − acc_1 (fraction), mean ± std over base models (one value for a single base).</param>
/// <param name="PValue">One-sided p-value that the gain is above 0 (see <see cref="PremiseCheck"/> for the test).</param>
/// <param name="AdjustedPValue">Holm-adjusted over the T − 1 later loops.</param>
public sealed record LoopGain(int Step, MeanStd Gain, double PValue, double AdjustedPValue)
{
    /// <summary>True when the adjusted p-value is below <see cref="PremiseCheck.Alpha"/>.</summary>
    public bool Beats => AdjustedPValue < PremiseCheck.Alpha;
}

/// <summary>
/// The premise of LoopRPT, checked on the base model(s) before any arm trains: do later loops beat loop 1 on held-out
/// data? LoopRPT rewards a loop step for doing better than the others; where the base's later loops add nothing, there is
/// no depth for it to reward, and the arms' comparison says little about the method (docs/experiment.md §4.2).
/// <para>The test, per evaluation set (bucket All), for each later loop t: with two or more base models, a one-sided t-test
/// over bases of acc_t − acc_1 (so the noise is the base models' seed noise); with one base model, a one-sided z-test of
/// the two accuracies over the set's n tokens with the unpaired standard error √((p_t(1 − p_t) + p_1(1 − p_1)) / n), which
/// only covers held-out sampling (conservative, as the same tokens are read at both loops) — train several bases for seed
/// noise. The T − 1 p-values are Holm-adjusted; the premise holds on the set when some later loop's adjusted p is below
/// <see cref="Alpha"/>.</para>
/// </summary>
/// <param name="EvaluationSet">The evaluation set.</param>
/// <param name="Bases">Base models checked.</param>
/// <param name="Tokens">Tokens in the set (of the first base).</param>
/// <param name="Accuracy">Accuracy per loop (fraction), mean ± std over bases.</param>
/// <param name="NegativeLogLikelihood">Mean NLL per loop (nats per token), mean ± std over bases (NaN where not evaluated).</param>
/// <param name="Gains">Loops 2..T against loop 1.</param>
public sealed record PremiseCheck(string EvaluationSet, int Bases, long Tokens, IReadOnlyList<MeanStd> Accuracy, IReadOnlyList<MeanStd> NegativeLogLikelihood,
                                  IReadOnlyList<LoopGain> Gains)
{
    /// <summary>Significance level of the check (family-wise over the later loops): 0.05.</summary>
    public const double Alpha = 0.05;

    /// <summary>The warning when no later loop beats loop 1 on any evaluation set.</summary>
    public const string Warning = "LoopRPT has no depth to reward here: train the base longer or larger.";

    /// <summary>True when some later loop beats loop 1 beyond the noise.</summary>
    public bool Holds => Gains.Any(g => g.Beats);

    /// <summary>
    /// The check on one evaluation set from each base model's evaluation of it (bucket All; buckets from the base itself).
    /// </summary>
    /// <exception cref="ArgumentException">No bases, or bases with different loop counts.</exception>
    public static PremiseCheck Assess(string evaluationSet, IReadOnlyList<BucketEvaluation> bases)
    {
        ArgumentNullException.ThrowIfNull(bases);
        if (bases.Count == 0) throw new ArgumentException("At least one base model's evaluation is needed.", nameof(bases));
        int T = bases[0].StepAccuracy.Count;
        if (bases.Any(b => b.StepAccuracy.Count != T)) throw new ArgumentException("The base models' evaluations have different loop counts.", nameof(bases));
        var accuracy = Enumerable.Range(0, T).Select(t => MeanStd.Of(bases.Select(b => b.StepAccuracy[t]))).ToArray();
        var nll = Enumerable.Range(0, T).Select(t => MeanStd.Of(bases.Select(b => b.StepNegativeLogLikelihood.Count == T ? b.StepNegativeLogLikelihood[t] : double.NaN))).ToArray();
        var gains = Enumerable.Range(1, T - 1).Select(t => MeanStd.Of(bases.Select(b => b.StepAccuracy[t] - b.StepAccuracy[0]))).ToArray();
        var p = gains.Select((g, i) => bases.Count >= 2 ? Significance.GreaterP(g) : SingleBaseP(bases[0], i + 1)).ToArray();
        var adjusted = Significance.Holm(p);
        return new PremiseCheck(evaluationSet, bases.Count, bases[0].Tokens, accuracy, nll,
            gains.Select((g, i) => new LoopGain(i + 2, g, p[i], adjusted[i])).ToArray());
    }

    /// <summary>One base: the z-test of acc_t &gt; acc_1 over the bucket's tokens (unpaired standard error).</summary>
    private static double SingleBaseP(BucketEvaluation b, int t)
    {
        double p1 = b.StepAccuracy[0], pt = b.StepAccuracy[t];
        if (b.Tokens < 1 || !double.IsFinite(p1) || !double.IsFinite(pt)) return double.NaN;
        double se = Math.Sqrt((p1 * (1 - p1) + pt * (1 - pt)) / b.Tokens);
        if (se == 0) return pt > p1 ? 0 : 1;
        return Significance.NormalUpperTail((pt - p1) / se);
    }

    /// <summary>The report's premise section for every set's check (the report puts <see cref="Warning"/> above it when the premise holds on none).</summary>
    public static string Markdown(IReadOnlyList<PremiseCheck> checks)
    {
        ArgumentNullException.ThrowIfNull(checks);
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("## Premise check: do the base model's later loops beat loop 1?\n\n");
        if (checks.Count == 0) return sb.Append("No evaluation set.\n").ToString();
        int T = checks[0].Accuracy.Count;
        var first = checks[0];
        sb.Append(c, $"Held-out accuracy (%) and NLL (nats per token) of the base model{(first.Bases > 1 ? $"s, mean ± std over {first.Bases} bases" : "")}, bucket All. ");
        sb.Append(first.Bases > 1
            ? "Gain = acc_t − acc_1; p: one-sided t-test over the bases (seed noise), Holm-adjusted over the later loops; α = 0.05.\n\n"
            : "Gain = acc_t − acc_1; p: one-sided z-test over the set's tokens (held-out sampling only; one base gives no seed noise: use several base seeds), Holm-adjusted over the later loops; α = 0.05.\n\n");
        sb.Append("| set | tokens | measure | ").Append(string.Join(" | ", Enumerable.Range(1, T).Select(t => "s" + t))).Append(" | premise |\n|---|---:|---|")
          .Append(string.Concat(Enumerable.Repeat("---:|", T))).Append("---|\n");
        foreach (var x in checks)
        {
            string verdict = x.Holds ? "holds: " + string.Join(", ", x.Gains.Where(g => g.Beats).Select(g => "s" + g.Step)) + " beat s1" : "**fails**";
            sb.Append(c, $"| {x.EvaluationSet} | {x.Tokens:N0} | accuracy | ").Append(string.Join(" | ", x.Accuracy.Select(m => ExperimentSummary.Points(m)))).Append(c, $" | {verdict} |\n");
            sb.Append(c, $"| {x.EvaluationSet} | | NLL | ").Append(string.Join(" | ", x.NegativeLogLikelihood.Select(m => Nats(m)))).Append(" | |\n");
            sb.Append(c, $"| {x.EvaluationSet} | | gain over s1 (adjusted p) | – | ")
              .Append(string.Join(" | ", x.Gains.Select(g => $"{ExperimentSummary.Points(g.Gain, signed: true)} ({PText(g.AdjustedPValue)})"))).Append(" | |\n");
        }
        return sb.ToString();
    }

    /// <summary>A p-value for a table: "&lt; 0.001", three decimals, or "–".</summary>
    internal static string PText(double p) => double.IsNaN(p) ? "–" : p < 0.001 ? "p < 0.001" : "p = " + p.ToString("0.000", CultureInfo.InvariantCulture);

    private static string Nats(MeanStd m)
    {
        if (!m.IsDefined) return "–";
        var mean = ExperimentSummary.Format(m.Mean, 3, signed: false);
        return m.Count < 2 ? mean : mean + " ± " + ExperimentSummary.Format(m.Std, 3, signed: false);
    }
}

/// <summary>
/// How long a base model was trained, for the premise section: its stages' steps (meta.json) and, when its Stage I ran
/// until held-out loss stopped improving, the <see cref="PlateauOutcome"/> stored beside it (docs/experiment.md §4.4).
/// </summary>
/// <param name="Directory">The base model directory.</param>
/// <param name="Stages">Its training history (stage and steps).</param>
/// <param name="Plateau">The plateau stop of its Stage I, or null for a fixed number of steps.</param>
public sealed record BaseBudget(string Directory, IReadOnlyList<StageRecord> Stages, PlateauOutcome? Plateau)
{
    /// <summary>Reads the budget of the base model in <paramref name="directory"/>.</summary>
    public static BaseBudget Of(string directory) => new(directory, ModelDirectory.ReadMeta(directory).Stages, PlateauOutcome.ReadFrom(directory));

    /// <summary>One line: "base DIR: pretrain 412 steps (plateau at step 412 ...; weights of step 312 kept ...), gate 50 steps".</summary>
    public string Text => $"Base `{Directory}`: " + (Stages.Count == 0 ? "no recorded training" : string.Join(", ", Stages.Select((s, i) =>
        string.Create(CultureInfo.InvariantCulture, $"{s.Name} {s.Steps} steps") + (i == 0 && Plateau is { } p ? " (" + p.Reason + ")" : i == 0 && s.Name == "pretrain" ? " (fixed budget)" : ""))));
}
