using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Evaluation;

/// <summary>
/// The paper's measurements on held-out text (docs/method.md §5): greedy next-token accuracy at every loop step s1..sT,
/// at the last step, and under Q-exit for each q with the mean exit step (1-indexed, the compute actually spent), for
/// all tokens and for the Easy / Medium / Hard buckets by base-model entropy.
/// <para>Buckets by default follow method.md literally: Easy = entropy &gt; 0.5, Medium &gt; 1.0, Hard &gt; 1.5 nats, so they
/// nest (Easy ⊇ Medium ⊇ Hard); <see cref="LoopEvaluationOptions.Buckets"/> changes the thresholds or takes the top
/// fractions of the evaluated tokens by entropy instead (<see cref="BucketRule.TopFraction"/>: a first pass computes the
/// entropies and the cut points, each bucket then holds the tokens above its cut; ties at a cut fall outside). The
/// entropy is that of the BASE model's last-step next-token distribution, so that several models are compared on the
/// same tokens; without a base model the evaluated model's own entropy is used and
/// <see cref="LoopEvaluation.BucketsFromBaseModel"/> says so.</para>
/// <para>Counts accumulate on the device across batches (+=) and are read to the host once, at the end.</para>
/// </summary>
public sealed class LoopEvaluator
{
    private readonly LoopEvaluationOptions _options;

    public LoopEvaluator(LoopEvaluationOptions? options = null)
    {
        _options = options ?? new LoopEvaluationOptions();
        _options.Validate();
    }

    /// <summary>Bucket names in result order.</summary>
    public static IReadOnlyList<string> BucketNames { get; } = ["All", "Easy", "Medium", "Hard"];

    /// <summary>
    /// Evaluates <paramref name="model"/> on <paramref name="batches"/> (targets = next tokens; <see cref="TokenBatch.IgnoreIndex"/>
    /// excluded). <paramref name="baseModel"/> defines the entropy buckets (same vocabulary); null uses the model itself.
    /// </summary>
    /// <exception cref="NotFiniteNumberException">The model's logits or exit probabilities, or the bucket model's entropies, are not finite (NaN weights, overflow).</exception>
    public LoopEvaluation Evaluate(OuroForCausalLM model, IEnumerable<TokenBatch> batches, OuroForCausalLM? baseModel = null, string name = "model")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        TorchNative.EnsureLoaded();
        if (baseModel is not null && baseModel.Config.VocabSize != model.Config.VocabSize)
            throw new ArgumentException($"The base model's vocab_size {baseModel.Config.VocabSize} differs from the evaluated model's {model.Config.VocabSize}; buckets need the same vocabulary.", nameof(baseModel));
        var q = _options.QValues.ToArray();
        int T = model.Config.TotalUtSteps, K = BucketNames.Count;
        var device = model.Device;
        var buckets = _options.Buckets;
        bool top = buckets.Rule == BucketRule.TopFraction;
        var source = top ? batches.ToList() : batches;                                  // two passes over the batches
        var baseLm = baseModel is null || ReferenceEquals(baseModel, model) ? model : baseModel;
        List<Tensor>? entropies = null;                                                   // per batch (B, S), reused below
        var thresholds = buckets.Bounds.ToArray();
        if (top) (entropies, thresholds) = TopFractionPass(baseLm, source, device, buckets);

        var tokens = zeros(K, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        var stepCorrect = zeros(K, T, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        var qCorrect = zeros(K, q.Length, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        var qSteps = zeros(K, q.Length, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        // NaN/Inf logits or exit probabilities of the model, and entropies of the bucket model: counted on the device and
        // read with the results, so a model with NaN weights is refused instead of reporting argmax garbage as accuracy.
        var nonFinite = zeros(2, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        try
        {
            int batchIndex = 0;
            foreach (var batch in source)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var (inputs, targets) = batch.ToTensors(device);
                var real = (targets >= 0).to_type(ScalarType.Float64);                              // (B, S)
                var output = model.Forward(inputs);
                var logits = output.Hidden.Select(h => model.Logits(h)).ToArray();                 // T × (B, S, V)
                var correct = stack(logits.Select(l => (l.argmax(-1) == targets).to_type(ScalarType.Float64)).ToArray(), -1); // (B, S, T)
                Tensor entropy;
                if (entropies is not null)
                    entropy = entropies[batchIndex];
                else if (ReferenceEquals(baseLm, model))
                    entropy = Objectives.LoopRptMath.TokenEntropy(logits[^1]);
                else
                    entropy = Objectives.LoopRptMath.TokenEntropy(baseModel!.Logits(baseModel.Forward(inputs).Hidden[^1]));
                batchIndex++;
                var probsAll = output.ExitProbabilities();
                nonFinite.add_(stack([
                    stack(logits.Select(l => l.isfinite().logical_not().sum()).Append(probsAll.isfinite().logical_not().sum()).ToArray()).sum(),
                    entropy.isfinite().logical_not().sum(),
                ]).to_type(ScalarType.Float64));
                var masks = stack(new[] { real }.Concat(thresholds.Select(th => real * (entropy > th).to_type(ScalarType.Float64))).ToArray(), 0); // (K, B, S)

                tokens.add_(masks.sum([1L, 2L]));
                stepCorrect.add_(einsum("kbs,bst->kt", masks, correct));
                var probs = probsAll;
                var qc = new Tensor[q.Length];
                var qs = new Tensor[q.Length];
                for (int j = 0; j < q.Length; j++)
                {
                    var steps = ExitDistribution.QExitStep(probs, q[j]);                            // (B, S) 0-based
                    var c = correct.gather(-1, steps.unsqueeze(-1)).squeeze(-1);                     // (B, S)
                    qc[j] = (masks * c).sum([1L, 2L]);
                    qs[j] = (masks * (steps.to_type(ScalarType.Float64) + 1)).sum([1L, 2L]);
                }
                qCorrect.add_(stack(qc, 1));
                qSteps.add_(stack(qs, 1));
            }

            // The one host read.
            var bad = nonFinite.cpu().data<double>().ToArray();
            if (bad[0] > 0) throw NonFiniteCheck.Outputs(model, "logits or exit probabilities");
            if (bad[1] > 0) throw NonFiniteCheck.Outputs(baseModel ?? model, "next-token entropies (which define the buckets)");
            var n = tokens.cpu().data<double>().ToArray();
            var sc = stepCorrect.cpu().data<double>().ToArray();
            var qcHost = qCorrect.cpu().data<double>().ToArray();
            var qsHost = qSteps.cpu().data<double>().ToArray();
            var results = new List<BucketEvaluation>(K);
            for (int k = 0; k < K; k++)
            {
                double denom = Math.Max(n[k], 1);
                var stepAcc = Enumerable.Range(0, T).Select(t => n[k] > 0 ? sc[k * T + t] / denom : double.NaN).ToArray();
                var points = Enumerable.Range(0, q.Length)
                    .Select(j => new QExitPoint(q[j], n[k] > 0 ? qcHost[k * q.Length + j] / denom : double.NaN, n[k] > 0 ? qsHost[k * q.Length + j] / denom : double.NaN))
                    .ToArray();
                results.Add(new BucketEvaluation(BucketNames[k], k == 0 ? 0 : thresholds[k - 1], (long)n[k], stepAcc, points)
                {
                    TopFraction = top && k > 0 ? buckets.Bounds[k - 1] : null,
                });
            }
            return new LoopEvaluation(name, T, q, baseModel is not null && !ReferenceEquals(baseModel, model), results);
        }
        finally
        {
            foreach (var e in entropies ?? []) e.Dispose();
            tokens.Dispose();
            stepCorrect.Dispose();
            qCorrect.Dispose();
            qSteps.Dispose();
            nonFinite.Dispose();
        }
    }

    /// <summary>
    /// The entropy source's last-step entropy of every batch, (B, S) each, kept for the second pass, and the cut points of
    /// the three top fractions over the real tokens: midway between the ⌈f·N⌉-th highest entropy and the next (below the
    /// lowest when f = 1), so that "&gt; cut" takes those ⌈f·N⌉ tokens.
    /// </summary>
    private static (List<Tensor> Entropies, double[] Cuts) TopFractionPass(OuroForCausalLM entropyModel, IEnumerable<TokenBatch> batches, Device device, EntropyBuckets buckets)
    {
        var list = new List<Tensor>();
        try
        {
            using var outer = NewDisposeScope();
            var real = new List<Tensor>();
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();                    // the batch's activations go at once
                using var noGrad = no_grad();
                var (inputs, targets) = batch.ToTensors(device);
                var entropy = Objectives.LoopRptMath.TokenEntropy(entropyModel.Logits(entropyModel.Forward(inputs).Hidden[^1])).to_type(ScalarType.Float64);
                list.Add(entropy.clone().DetachFromDisposeScope());
                real.Add(entropy.masked_select(targets >= 0).MoveToOuterDisposeScope());
            }
            long n = real.Sum(t => t.shape[0]);
            if (n == 0) return (list, [.. buckets.Bounds.Select(_ => double.PositiveInfinity)]);
            var sorted = cat(real.ToArray(), 0).sort(descending: true).Values.cpu().data<double>().ToArray();
            var cuts = buckets.Bounds.Select(f =>
            {
                long k = Math.Clamp((long)Math.Ceiling(f * n - 1e-9), 1, n);
                return k >= n ? sorted[n - 1] - 1 : (sorted[k - 1] + sorted[k]) / 2;
            }).ToArray();
            return (list, cuts);
        }
        catch
        {
            foreach (var t in list) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Held-out batches: windows of S+1 tokens starting every S tokens, so neighbouring windows share one token (the last
    /// target of one is the first input of the next) and every token after the first is predicted exactly once; the last
    /// partial window is dropped.
    /// </summary>
    public static IEnumerable<TokenBatch> Windows(int[] tokens, int batchSize, int sequenceLength, int maxBatches = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be at least 1.");
        if (sequenceLength < 1) throw new ArgumentOutOfRangeException(nameof(sequenceLength), sequenceLength, "Sequence length must be at least 1.");
        int stride = sequenceLength;              // S+1-token windows, S apart: neighbours share one token
        var rows = new List<ReadOnlyMemory<int>>();
        int produced = 0;
        for (int start = 0; start + sequenceLength + 1 <= tokens.Length && produced < maxBatches; start += stride)
        {
            rows.Add(tokens.AsMemory(start, sequenceLength + 1));
            if (rows.Count == batchSize)
            {
                yield return TokenBatch.FromWindows(rows, sequenceLength);
                rows.Clear();
                produced++;
            }
        }
        if (rows.Count > 0 && produced < maxBatches) yield return TokenBatch.FromWindows(rows, sequenceLength);
    }
}
