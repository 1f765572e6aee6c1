using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>Computes <see cref="LoopRptMetrics"/> and Pareto sweeps from scored data (<see cref="LoopRptCatalog.Evaluate"/>, <see cref="LoopRptCatalog.ParetoSweep"/>).</summary>
internal static class ScoredDataEvaluator
{
    public static readonly double[] DefaultEntropyEdges = [0.5, 1, 2, 4];

    public static LoopRptMetrics Evaluate(IDataView scored, string prefix, double[]? edges, double[]? topFractions = null)
    {
        ArgumentNullException.ThrowIfNull(scored);
        if (edges is not null && topFractions is not null)
            throw new ArgumentException("Give entropy bucket edges or top fractions, not both.", nameof(topFractions));
        if (topFractions is not null)
        {
            if (topFractions.Length == 0) throw new ArgumentException("At least one top fraction is needed, e.g. [0.5, 0.2].", nameof(topFractions));
            for (int i = 0; i < topFractions.Length; i++)
                if (!(topFractions[i] is > 0 and < 1) || (i > 0 && topFractions[i] >= topFractions[i - 1]))
                    throw new ArgumentOutOfRangeException(nameof(topFractions), topFractions[i], "Top fractions must lie in (0, 1) and decrease, e.g. [0.5, 0.2].");
        }
        edges ??= topFractions is null ? DefaultEntropyEdges : null;
        if (edges is not null)
            for (int i = 0; i < edges.Length; i++)
                if (double.IsNaN(edges[i]) || (i > 0 && edges[i] <= edges[i - 1]))
                    throw new ArgumentOutOfRangeException(nameof(edges), edges[i], "Entropy bucket edges must be increasing numbers.");
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

        // Top fractions: a first pass reads every token's entropy; edge i is the entropy of the ⌈f_i·N⌉-th highest, so that
        // the bucket from it up holds the top f_i of the tokens (ties at an edge go up).
        edges ??= TopFractionEdges(scored, en, lp, topFractions!);
        int nb = edges.Length + 1;
        var bTokens = new long[nb];
        var bCorrect = new double[nb];
        var bExit = new double[nb];
        var bNll = new double[nb];
        double[] stepCorrect = [];
        long rows = 0, tokens = 0;
        double correct = 0, exit = 0, nll = 0, compute = 0;
        using var cursor = scored.GetRowCursor([lp, ex, en, co, sc, cr]);
        var gLp = cursor.GetGetter<VBuffer<float>>(lp);
        var gEx = cursor.GetGetter<VBuffer<float>>(ex);
        var gEn = cursor.GetGetter<VBuffer<float>>(en);
        var gCo = cursor.GetGetter<VBuffer<float>>(co);
        var gSc = cursor.GetGetter<VBuffer<float>>(sc);
        var gCr = cursor.GetGetter<float>(cr);
        VBuffer<float> vLp = default, vEx = default, vEn = default, vCo = default, vSc = default;
        float ratio = 0;
        while (cursor.MoveNext())
        {
            rows++;
            gLp(ref vLp); gEx(ref vEx); gEn(ref vEn); gCo(ref vCo); gSc(ref vSc); gCr(ref ratio);
            var l = vLp.DenseValues().ToArray();
            if (l.Length == 0) continue;
            var e = vEx.DenseValues().ToArray();
            var h = vEn.DenseValues().ToArray();
            var c = vCo.DenseValues().ToArray();
            var s = vSc.DenseValues().ToArray();
            if (s.Length > 0)
            {
                if (stepCorrect.Length == 0) stepCorrect = new double[s.Length];
                for (int t = 0; t < s.Length && t < stepCorrect.Length; t++) stepCorrect[t] += s[t];
            }
            compute += (double)ratio * l.Length;
            for (int k = 0; k < l.Length; k++)
            {
                tokens++;
                correct += c[k];
                exit += e[k];
                nll -= l[k];
                int b = 0;
                while (b < edges.Length && h[k] >= edges[b]) b++;
                bTokens[b]++;
                bCorrect[b] += c[k];
                bExit[b] += e[k];
                bNll[b] -= l[k];
            }
        }
        if (rows == 0) throw new InvalidOperationException("Cannot evaluate: the scored data has no rows.");
        double Div(double a, long n) => n == 0 ? double.NaN : a / n;
        var buckets = new List<EntropyBucket>();
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        for (int b = 0; b < nb; b++)
        {
            double lower = b == 0 ? 0 : edges[b - 1], upper = b < edges.Length ? edges[b] : double.PositiveInfinity;
            var bucket = new EntropyBucket(lower, upper, bTokens[b], Div(bCorrect[b], bTokens[b]), Div(bExit[b], bTokens[b]), Div(bNll[b], bTokens[b]));
            if (topFractions is not null)
            {
                var range = EntropyBucket.Range(lower, upper);
                string share = b == 0 ? string.Create(ci, $"bottom {100 * (1 - topFractions[0]):0.#} %")
                    : b == nb - 1 ? string.Create(ci, $"top {100 * topFractions[b - 1]:0.#} %")
                    : string.Create(ci, $"top {100 * topFractions[b - 1]:0.#}–{100 * topFractions[b]:0.#} %");
                bucket = bucket with { Label = $"{share} ({range})" };
            }
            buckets.Add(bucket);
        }
        return new LoopRptMetrics
        {
            Rows = rows, Tokens = tokens, Accuracy = Div(correct, tokens), StepAccuracy = stepCorrect.Select(x => Div(x, tokens)).ToArray(),
            MeanExitStep = Div(exit, tokens), ComputeFraction = Div(compute, tokens), NegativeLogLikelihood = Div(nll, tokens), EntropyBuckets = buckets,
        };
    }

    private static double[] TopFractionEdges(IDataView scored, DataViewSchema.Column entropyColumn, DataViewSchema.Column lp, double[] topFractions)
    {
        var all = new List<float>();
        using (var cursor = scored.GetRowCursor([entropyColumn, lp]))
        {
            var gEn = cursor.GetGetter<VBuffer<float>>(entropyColumn);
            var gLp = cursor.GetGetter<VBuffer<float>>(lp);
            VBuffer<float> vEn = default, vLp = default;
            while (cursor.MoveNext())
            {
                gEn(ref vEn);
                gLp(ref vLp);
                int n = vLp.Length;                       // the tokens the main pass counts
                var h = vEn.DenseValues().Take(n);
                all.AddRange(h);
            }
        }
        if (all.Count == 0) return [.. topFractions.Select(_ => double.PositiveInfinity)];
        all.Sort((a, b) => b.CompareTo(a));                                                     // descending
        return topFractions.Select(f => (double)all[(int)Math.Clamp(Math.Ceiling(f * all.Count - 1e-9), 1, all.Count) - 1]).ToArray();
    }

    /// <summary>
    /// Accuracy / NLL / compute for each Q-exit threshold from ONE full-depth pass per batch: per token the exit
    /// distribution and each step's result are kept, and each q picks its step (docs/method.md §2).
    /// </summary>
    public static IReadOnlyList<ParetoPoint> Pareto(AdaptiveExitScoringTransformer scorer, IDataView data, IEnumerable<double> thresholds)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(data);
        var qs = thresholds.ToArray();
        if (qs.Length == 0) throw new ArgumentException("At least one threshold is needed.", nameof(thresholds));
        foreach (var q in qs)
            if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(thresholds), q, "Q-exit thresholds must lie in [0, 1].");
        var col = SchemaChecks.Tokens(data.Schema, scorer.TokenColumnName);
        var engine = scorer.Engine;
        int T = engine.Loops;
        var correct = new double[qs.Length];
        var nll = new double[qs.Length];
        var exit = new double[qs.Length];
        long tokens = 0;
        using var cursor = data.GetRowCursor([col]);
        var getter = SchemaChecks.TokenGetter(cursor, col);
        var batch = new List<int[]?>();
        void Flush()
        {
            foreach (var d in engine.Detail(batch))
            {
                for (int k = 0; k < d.TokenCount; k++)
                {
                    tokens++;
                    for (int i = 0; i < qs.Length; i++)
                    {
                        int step = QExit(d.ExitProbabilities.AsSpan(k * T, T), qs[i]);
                        correct[i] += d.StepCorrect[k * T + step];
                        nll[i] -= d.StepLogProbabilities[k * T + step];
                        exit[i] += step + 1;
                    }
                }
            }
            batch.Clear();
        }
        while (cursor.MoveNext())
        {
            int[]? ids = null;
            getter(ref ids);
            batch.Add(ids);
            if (batch.Count == engine.BatchSize) Flush();
        }
        if (batch.Count > 0) Flush();
        if (tokens == 0) throw new InvalidOperationException($"Cannot sweep: column '{col.Name}' holds no row with at least two tokens.");
        var points = qs.Select((q, i) => (q, acc: correct[i] / tokens, nll: nll[i] / tokens, exit: exit[i] / tokens)).ToList();
        return points.Select(p => new ParetoPoint(p.q, p.acc, p.nll, p.exit, p.exit / T,
            !points.Any(o => o.acc >= p.acc && o.exit <= p.exit && (o.acc > p.acc || o.exit < p.exit)))).ToList();
    }

    /// <summary>First step whose CDF reaches q (q &gt;= 1: the last step), as <see cref="Model.ExitDistribution.QExitStep"/>.</summary>
    internal static int QExit(ReadOnlySpan<float> p, double q)
    {
        int T = p.Length;
        if (q >= 1.0 || T == 1) return T - 1;
        float cdf = 0;
        int count = 0;
        for (int t = 0; t < T - 1; t++)
        {
            cdf += p[t];
            if (cdf < q) count++;
        }
        return count;
    }
}
