using LoopRpt.Evaluation;
using LoopRpt.Inference;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace LoopRpt.MLNet;

/// <summary>
/// ML.NET's side of the evaluation (<see cref="LoopRptCatalog.Evaluate"/>, <see cref="LoopRptCatalog.ParetoSweep"/>): it
/// reads the scorer's columns or rows and reduces them with the project's one evaluation core through its public API
/// (<see cref="EntropyBuckets"/>, <see cref="ReadoutTally"/>, <see cref="LoopEvaluator"/>), so its figures are the CLI's.
/// </summary>
internal static class ScoredDataEvaluator
{
    public static LoopRptMetrics Evaluate(IDataView scored, string prefix, EntropyBuckets? buckets, double[]? edges)
    {
        ArgumentNullException.ThrowIfNull(scored);
        if (buckets is not null && edges is not null)
            throw new ArgumentException("Give the nested entropy buckets or disjoint entropy bucket edges, not both.", nameof(edges));
        buckets?.Validate();
        if (edges is not null)
        {
            if (edges.Length == 0) throw new ArgumentException("At least one entropy bucket edge is needed, e.g. [0.5, 2].", nameof(edges));
            for (int i = 0; i < edges.Length; i++)
                if (double.IsNaN(edges[i]) || (i > 0 && edges[i] <= edges[i - 1]))
                    throw new ArgumentOutOfRangeException(nameof(edges), edges[i], "Entropy bucket edges must be increasing numbers.");
        }
        var schema = scored.Schema;
        DataViewSchema.Column Col(string name, DataViewType expected)
        {
            var col = schema.GetColumnOrNull(prefix + name) ?? throw SchemaChecks.Missing(prefix + name);
            if (!col.Type.Equals(expected)) throw SchemaChecks.Mismatch(prefix + name, expected.ToString() ?? "?", col.Type.ToString() ?? "?");
            return col;
        }
        var vec = new VectorDataViewType(NumberDataViewType.Single);
        var lp = Col(ScoreColumns.TokenLogProbabilities, vec);
        var ex = Col(ScoreColumns.ExitSteps, vec);
        var en = Col(ScoreColumns.TokenEntropies, vec);
        var co = Col(ScoreColumns.Correct, vec);
        var sc = Col(ScoreColumns.StepCorrectCounts, vec);
        var cr = Col(ScoreColumns.ComputeFraction, NumberDataViewType.Single);

        // One pass reads every predicted token's read-out; the reduction is the evaluation core's.
        var logProbs = new List<float>();
        var exits = new List<float>();
        var entropies = new List<float>();
        var correct = new List<float>();
        double[] stepCorrect = [];
        long rows = 0;
        double compute = 0;
        using (var cursor = scored.GetRowCursor([lp, ex, en, co, sc, cr]))
        {
            var gLp = cursor.GetGetter<VBuffer<float>>(lp);
            var gEx = cursor.GetGetter<VBuffer<float>>(ex);
            var gEn = cursor.GetGetter<VBuffer<float>>(en);
            var gCo = cursor.GetGetter<VBuffer<float>>(co);
            var gSc = cursor.GetGetter<VBuffer<float>>(sc);
            var gCr = cursor.GetGetter<float>(cr);
            VBuffer<float> vLp = default, vEx = default, vEn = default, vCo = default, vSc = default;
            float fraction = 0;
            while (cursor.MoveNext())
            {
                rows++;
                gLp(ref vLp); gEx(ref vEx); gEn(ref vEn); gCo(ref vCo); gSc(ref vSc); gCr(ref fraction);
                int n = vLp.Length;
                if (n == 0) continue;
                if (vEx.Length != n || vEn.Length != n || vCo.Length != n)
                    throw new InvalidOperationException($"Row {rows - 1} of the scored data has {n} token log-probabilities but {vEx.Length} exit steps, {vEn.Length} entropies and {vCo.Length} correctness flags.");
                logProbs.AddRange(vLp.DenseValues());
                exits.AddRange(vEx.DenseValues());
                entropies.AddRange(vEn.DenseValues());
                correct.AddRange(vCo.DenseValues());
                var s = vSc.DenseValues().ToArray();
                if (s.Length > 0)
                {
                    if (stepCorrect.Length == 0) stepCorrect = new double[s.Length];
                    for (int t = 0; t < s.Length && t < stepCorrect.Length; t++) stepCorrect[t] += s[t];
                }
                compute += (double)fraction * n;
            }
        }
        if (rows == 0) throw new InvalidOperationException("Cannot evaluate: the scored data has no rows.");

        using var scope = NewDisposeScope();
        int tokenCount = logProbs.Count;
        var h = tensor(entropies.ToArray()).to_type(ScalarType.Float64);                        // compared with double edges exactly
        var real = ones(tokenCount, dtype: ScalarType.Bool);
        double[] cuts = [];
        var rule = buckets ?? EntropyBuckets.Published;
        Tensor masks;                                                                        // (K, N), row 0 = all tokens
        if (edges is null)
        {
            cuts = rule.Cuts(() => [.. entropies.Select(x => (double)x)]);
            masks = EntropyBuckets.Masks(h, real, cuts);
        }
        else
        {
            var bounds = new[] { double.NegativeInfinity }.Concat(edges).Append(double.PositiveInfinity).ToArray();
            masks = stack(new[] { real.to_type(ScalarType.Float64) }.Concat(Enumerable.Range(0, bounds.Length - 1)
                .Select(b => ((h >= bounds[b]) & (h < bounds[b + 1])).to_type(ScalarType.Float64))).ToArray(), 0);
        }
        using var tally = new ReadoutTally((int)masks.shape[0], 1, CPU);
        tally.Add(masks, tensor(correct.ToArray()).view(-1, 1), tensor(logProbs.ToArray()).view(-1, 1), tensor(exits.ToArray()).view(-1, 1));
        var totals = tally.Read();

        var result = new List<EntropyBucket>();
        if (edges is null)
        {
            for (int k = 0; k < totals.Buckets; k++)
            {
                var name = EntropyBuckets.Names[k];
                double cut = k == 0 ? 0 : cuts[k - 1];
                double? fractionAsked = rule.Rule == BucketRule.TopFraction && k > 0 ? rule.Bounds[k - 1] : null;
                result.Add(Bucket(totals, k, cut, double.PositiveInfinity) with { Name = name, Label = EntropyBuckets.Label(name, cut, fractionAsked) });
            }
        }
        else
        {
            for (int k = 1; k < totals.Buckets; k++)
                result.Add(Bucket(totals, k, k == 1 ? 0 : edges[k - 2], k - 1 < edges.Length ? edges[k - 1] : double.PositiveInfinity) with { Name = $"Range{k}" });
        }
        double Div(double a, long n) => n == 0 ? double.NaN : a / n;
        return new LoopRptMetrics
        {
            Rows = rows, Tokens = tokenCount, Accuracy = totals.Accuracy(0, 0), StepAccuracy = stepCorrect.Select(x => Div(x, tokenCount)).ToArray(),
            MeanExitStep = totals.MeanExitStep(0, 0), ComputeFraction = Div(compute, tokenCount), NegativeLogLikelihood = totals.NegativeLogLikelihood(0, 0),
            EntropyBuckets = result,
        };
    }

    private static EntropyBucket Bucket(ReadoutTotals totals, int k, double lower, double upper)
        => new(lower, upper, totals.Tokens(k), totals.Accuracy(k, 0), totals.MeanExitStep(k, 0), totals.NegativeLogLikelihood(k, 0));

    /// <summary>
    /// Accuracy / NLL / compute for each Q-exit threshold: the rows windowed exactly as the scorer windows them, evaluated
    /// by <see cref="LoopEvaluator"/> (by default one full-depth pass, each q selecting its exit; docs/method.md §2).
    /// </summary>
    public static IReadOnlyList<ParetoPoint> Pareto(AdaptiveExitScoringTransformer scorer, IDataView data, IEnumerable<double> thresholds, EvaluationPass pass)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(thresholds);
        var qs = thresholds.ToArray();
        if (qs.Length == 0) throw new ArgumentException("At least one threshold is needed.", nameof(thresholds));
        foreach (var q in qs)
            if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(thresholds), q, "Q-exit thresholds must lie in [0, 1].");
        var evaluator = new LoopEvaluator(new LoopEvaluationOptions { QValues = qs, Pass = pass });
        var col = SchemaChecks.Tokens(data.Schema, scorer.TokenColumnName);
        var rows = new List<int[]?>();
        using (var cursor = data.GetRowCursor([col]))
        {
            var getter = SchemaChecks.TokenGetter(cursor, col);
            while (cursor.MoveNext())
            {
                int[]? ids = null;
                getter(ref ids);
                rows.Add(ids);
            }
        }
        var engine = scorer.Engine;
        var batches = engine.Exclusive(() => engine.Batches(rows));
        if (batches.Count == 0) throw new InvalidOperationException($"Cannot sweep: column '{col.Name}' holds no row with at least two tokens.");
        var all = engine.Exclusive(() => evaluator.Evaluate(engine.Model, batches, name: "scorer")).Buckets[0];
        int T = engine.Loops;
        var points = all.QExit;
        return points.Select(p => new ParetoPoint(p.Q, p.Accuracy, p.NegativeLogLikelihood, p.MeanExitStep, p.MeanExitStep / T,
            !points.Any(o => o.Accuracy >= p.Accuracy && o.MeanExitStep <= p.MeanExitStep && (o.Accuracy > p.Accuracy || o.MeanExitStep < p.MeanExitStep)))).ToList();
    }
}
