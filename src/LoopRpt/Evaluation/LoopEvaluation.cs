using System.Globalization;
using System.Text;

namespace LoopRpt.Evaluation;

/// <summary>Accuracy and mean exit step (1-indexed) under Q-exit at threshold <paramref name="Q"/>.</summary>
public sealed record QExitPoint(double Q, double Accuracy, double MeanExitStep)
{
    /// <summary>Mean -log p(target) in nats at the tokens' exits; NaN where not measured (results stored by older versions).</summary>
    public double NegativeLogLikelihood { get; init; } = double.NaN;
}

/// <summary>How <see cref="LoopEvaluator"/> obtains its Q-exit figures.</summary>
public enum EvaluationPass
{
    /// <summary>Every loop for every token, each q's exit selected afterwards (the paper's protocol; one pass for all q).</summary>
    FullDepth,
    /// <summary>
    /// The compute-saving adaptive scorer, one pass per q: exited tokens stop looping, and later tokens attend to their
    /// frozen keys/values (docs/adaptive-exit.md), so figures can differ slightly from <see cref="FullDepth"/>.
    /// </summary>
    Adaptive,
}

/// <summary>One token bucket's results.</summary>
/// <param name="Name">All, Easy, Medium or Hard: keys of nested buckets (Easy ⊇ Medium ⊇ Hard); <see cref="Label"/> says what each holds.</param>
/// <param name="MinEntropy">The bucket holds tokens with base-model entropy above this (nats); 0 for All (every token).</param>
/// <param name="Tokens">Tokens in the bucket.</param>
/// <param name="StepAccuracy">Accuracy when reading out after loop s1..sT.</param>
/// <param name="QExit">One point per q, in the order evaluated.</param>
public sealed record BucketEvaluation(string Name, double MinEntropy, long Tokens, IReadOnlyList<double> StepAccuracy, IReadOnlyList<QExitPoint> QExit)
{
    /// <summary>With <see cref="BucketRule.TopFraction"/> buckets, the fraction of tokens asked for (the entropy it came to is <see cref="MinEntropy"/>); else null.</summary>
    public double? TopFraction { get; init; }

    /// <summary>What the bucket holds, in words: "all tokens", "H > 0.5 nats", "top 20 % (H > 2.314 nats)".</summary>
    public string Label => EntropyBuckets.Label(this);

    /// <summary>Mean -log p(target) in nats reading out after loop s1..sT; empty where not measured (older stored results).</summary>
    public IReadOnlyList<double> StepNegativeLogLikelihood { get; init; } = [];

    /// <summary>Accuracy at the last loop step ("peak").</summary>
    public double LastStepAccuracy => StepAccuracy[^1];

    /// <summary>The point for threshold <paramref name="q"/>, or null if it was not evaluated.</summary>
    public QExitPoint? AtQ(double q) => QExit.FirstOrDefault(p => Math.Abs(p.Q - q) < 1e-9);
}

/// <summary>Results of <see cref="LoopEvaluator.Evaluate"/> for one model, with markdown and CSV writers.</summary>
public sealed class LoopEvaluation
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    internal LoopEvaluation(string name, int steps, IReadOnlyList<double> qValues, bool bucketsFromBaseModel, IReadOnlyList<BucketEvaluation> buckets)
    {
        Name = name;
        Steps = steps;
        QValues = qValues;
        BucketsFromBaseModel = bucketsFromBaseModel;
        Buckets = buckets;
    }

    /// <summary>Where the Q-exit figures come from: every loop then select (default), or the adaptive pass.</summary>
    public EvaluationPass Pass { get; init; }

    /// <summary>The label given to the evaluated model.</summary>
    public string Name { get; }

    /// <summary>Loop steps T.</summary>
    public int Steps { get; }

    public IReadOnlyList<double> QValues { get; }

    /// <summary>True when the buckets come from a separate base model; false when from the evaluated model's own entropy.</summary>
    public bool BucketsFromBaseModel { get; }

    /// <summary>All, Easy, Medium, Hard (nested: Easy ⊇ Medium ⊇ Hard).</summary>
    public IReadOnlyList<BucketEvaluation> Buckets { get; }

    /// <summary>A bucket by name (All, Easy, Medium, Hard).</summary>
    public BucketEvaluation this[string bucket] => Buckets.FirstOrDefault(b => b.Name == bucket)
        ?? throw new ArgumentException($"Unknown bucket '{bucket}'; expected one of {string.Join(", ", Buckets.Select(b => b.Name))}.", nameof(bucket));

    private static string Pct(double v) => double.IsNaN(v) ? "–" : (100 * v).ToString("F2", C);
    private static string Num(double v, string f = "F3") => double.IsNaN(v) ? "–" : v.ToString(f, C);

    /// <summary>Two markdown tables: per-step / last-step accuracy per bucket, and Q-exit accuracy with mean exit step per q.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append(C, $"**{Name}** — next-token accuracy (%); buckets: tokens whose {(BucketsFromBaseModel ? "base model's" : "own (no base model given)")} last-step entropy H is above a cut (nested)\n\n");
        sb.Append("| bucket | tokens | ").Append(string.Join(" | ", Enumerable.Range(1, Steps).Select(s => "s" + s))).Append(" | last |\n");
        sb.Append("|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", Steps + 1))).Append('\n');
        foreach (var b in Buckets)
            sb.Append(C, $"| {Label(b)} | {b.Tokens} | ").Append(string.Join(" | ", b.StepAccuracy.Select(Pct))).Append(C, $" | {Pct(b.LastStepAccuracy)} |\n");
        sb.Append(Pass == EvaluationPass.Adaptive
                ? "\nQ-exit (adaptive pass: exited tokens stop looping): accuracy (%) @ mean exit step\n\n| q | "
                : "\nQ-exit (every loop computed, exit selected): accuracy (%) @ mean exit step\n\n| q | ").Append(string.Join(" | ", Buckets.Select(Label))).Append(" |\n");
        sb.Append("|---:|").Append(string.Concat(Enumerable.Repeat("---:|", Buckets.Count))).Append('\n');
        for (int j = 0; j < QValues.Count; j++)
            sb.Append(C, $"| {QValues[j]:0.###} | ").Append(string.Join(" | ", Buckets.Select(b => $"{Pct(b.QExit[j].Accuracy)} @ {Num(b.QExit[j].MeanExitStep, "F2")}"))).Append(" |\n");
        return sb.ToString();
    }

    /// <summary>Long-format CSV: model,bucket,tokens,kind,x,accuracy,mean_exit_step,nll (kind = step with x = s, or qexit with x = q).</summary>
    public string ToCsv(bool header = true)
    {
        var sb = new StringBuilder();
        if (header) sb.Append("model,bucket,tokens,kind,x,accuracy,mean_exit_step,nll\n");
        foreach (var b in Buckets)
        {
            for (int t = 0; t < b.StepAccuracy.Count; t++)
                sb.Append(C, $"{Csv(Name)},{b.Name},{b.Tokens},step,{t + 1},{b.StepAccuracy[t]:R},{t + 1},{(t < b.StepNegativeLogLikelihood.Count ? b.StepNegativeLogLikelihood[t] : double.NaN):R}\n");
            foreach (var p in b.QExit)
                sb.Append(C, $"{Csv(Name)},{b.Name},{b.Tokens},qexit,{p.Q:R},{p.Accuracy:R},{p.MeanExitStep:R},{p.NegativeLogLikelihood:R}\n");
        }
        return sb.ToString();
    }

    /// <summary>CSV of several models (one header).</summary>
    public static string ToCsv(IEnumerable<LoopEvaluation> evaluations)
        => string.Concat(evaluations.Select((e, i) => e.ToCsv(header: i == 0)));

    /// <summary>
    /// One comparison table: a row per model and bucket with accuracy at s1..sT and, for each q in
    /// <paramref name="qValues"/> (default 0.5 and 0.7 where evaluated), Q-exit accuracy @ mean exit step.
    /// </summary>
    public static string CompareMarkdown(IReadOnlyList<LoopEvaluation> evaluations, IReadOnlyList<double>? qValues = null)
    {
        if (evaluations.Count == 0) return "";
        int T = evaluations[0].Steps;
        var qs = (qValues ?? [0.5, 0.7]).Where(q => evaluations.All(e => e.Buckets[0].AtQ(q) is not null)).ToArray();
        var sb = new StringBuilder();
        sb.Append("| bucket | model | tokens | ").Append(string.Join(" | ", Enumerable.Range(1, T).Select(s => "s" + s)))
          .Append(string.Concat(qs.Select(q => string.Format(C, " | q={0:0.###} acc @ exit", q)))).Append(" |\n");
        sb.Append("|---|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", T + qs.Length))).Append('\n');
        foreach (var bucket in LoopEvaluator.BucketNames)
            foreach (var e in evaluations)
            {
                var b = e[bucket];
                sb.Append(C, $"| {Label(b)} | {e.Name} | {b.Tokens} | ").Append(string.Join(" | ", b.StepAccuracy.Select(Pct)));
                foreach (var q in qs)
                {
                    var p = b.AtQ(q)!;
                    sb.Append(C, $" | {Pct(p.Accuracy)} @ {Num(p.MeanExitStep, "F2")}");
                }
                sb.Append(" |\n");
            }
        return sb.ToString();
    }

    /// <summary>
    /// The Pareto sweep as one small table per bucket: a row per read-out (loop steps s1..sT, then Q-exit at each q in
    /// <paramref name="qValues"/>, default all evaluated), a column per model; cells are accuracy (%), and for Q-exit
    /// accuracy @ mean exit step. Each table stays as narrow as the number of models, however many q are swept.
    /// </summary>
    public static string CompareMarkdownByBucket(IReadOnlyList<LoopEvaluation> evaluations, IReadOnlyList<double>? qValues = null)
    {
        if (evaluations.Count == 0) return "";
        int T = evaluations[0].Steps;
        var qs = (qValues ?? evaluations[0].QValues).Where(q => evaluations.All(e => e.Buckets[0].AtQ(q) is not null)).ToArray();
        var sb = new StringBuilder();
        foreach (var bucket in LoopEvaluator.BucketNames)
        {
            var first = evaluations[0][bucket];
            sb.Append(C, $"### {first.Label} ({first.Tokens:N0} tokens)\n\n| read-out | ").Append(string.Join(" | ", evaluations.Select(e => e.Name))).Append(" |\n");
            sb.Append("|---|").Append(string.Concat(Enumerable.Repeat("---:|", evaluations.Count))).Append('\n');
            for (int t = 0; t < T; t++)
                sb.Append(C, $"| s{t + 1} | ").Append(string.Join(" | ", evaluations.Select(e => Pct(e[bucket].StepAccuracy[t])))).Append(" |\n");
            foreach (var q in qs)
                sb.Append(C, $"| q={q:0.###} | ").Append(string.Join(" | ", evaluations.Select(e => e[bucket].AtQ(q)!).Select(p => $"{Pct(p.Accuracy)} @ {Num(p.MeanExitStep, "F2")}"))).Append(" |\n");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>
    /// Several evaluations of disjoint token sets (for example one per task difficulty) pooled into one, as if evaluated
    /// together: per bucket, accuracies and mean exit steps are averaged with the token counts as weights. All must have
    /// the same loop count, q values and buckets.
    /// </summary>
    public static LoopEvaluation Pool(IReadOnlyList<LoopEvaluation> parts, string name)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new ArgumentException("Nothing to pool.", nameof(parts));
        var first = parts[0];
        if (parts.Any(p => p.Steps != first.Steps || !p.QValues.SequenceEqual(first.QValues) || !p.Buckets.Select(b => b.Name).SequenceEqual(first.Buckets.Select(b => b.Name))))
            throw new ArgumentException("Pooled evaluations must have the same loop steps, q values and buckets.", nameof(parts));
        var buckets = first.Buckets.Select((b0, k) =>
        {
            var bs = parts.Select(p => p.Buckets[k]).Where(b => b.Tokens > 0).ToArray();
            long n = bs.Sum(b => b.Tokens);
            double Mean(Func<BucketEvaluation, double> f) => n == 0 ? double.NaN : bs.Sum(b => b.Tokens * f(b)) / n;
            var steps = Enumerable.Range(0, first.Steps).Select(t => Mean(b => b.StepAccuracy[t])).ToArray();
            var qs = Enumerable.Range(0, first.QValues.Count).Select(j => new QExitPoint(first.QValues[j], Mean(b => b.QExit[j].Accuracy), Mean(b => b.QExit[j].MeanExitStep))
            {
                NegativeLogLikelihood = Mean(b => b.QExit[j].NegativeLogLikelihood),
            }).ToArray();
            var stepNll = bs.All(b => b.StepNegativeLogLikelihood.Count == first.Steps)
                ? Enumerable.Range(0, first.Steps).Select(t => Mean(b => b.StepNegativeLogLikelihood[t])).ToArray() : [];
            return new BucketEvaluation(b0.Name, b0.MinEntropy, n, steps, qs) { TopFraction = b0.TopFraction, StepNegativeLogLikelihood = stepNll };
        }).ToArray();
        if (parts.Any(p => p.Pass != first.Pass)) throw new ArgumentException("Pooled evaluations must come from the same pass (full depth or adaptive).", nameof(parts));
        return new LoopEvaluation(name, first.Steps, first.QValues, parts.All(p => p.BucketsFromBaseModel), buckets) { Pass = first.Pass };
    }

    private static string Label(BucketEvaluation b) => b.Label;

    private static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
