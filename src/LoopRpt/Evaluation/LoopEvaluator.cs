using LoopRpt.Data;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Evaluation;

/// <summary>
/// The evaluation (docs/method.md §5), used by the CLI (<c>evaluate</c>, <c>pareto</c>, <c>experiment</c>), ML.NET's
/// Pareto sweep and hosting's held-out check: greedy next-token accuracy and NLL at every loop step s1..sT, and under
/// Q-exit for each q with the mean exit step (1-indexed, the compute actually spent), for all tokens and for the nested
/// Easy ⊇ Medium ⊇ Hard buckets (<see cref="EntropyBuckets"/>); or one exit rule's loss and accuracy
/// (<see cref="EvaluateExit"/>).
/// <para>Buckets by default follow method.md literally: Easy = entropy &gt; 0.5, Medium &gt; 1.0, Hard &gt; 1.5 nats;
/// <see cref="LoopEvaluationOptions.Buckets"/> changes the thresholds or takes the top fractions of the evaluated tokens
/// by entropy instead (a first pass computes the entropies and the cut points, <see cref="EntropyBuckets"/>). The entropy
/// is that of the BASE model's last-step next-token distribution, so that several models are compared on the same tokens;
/// without a base model the evaluated model's own last-step entropy is used and
/// <see cref="LoopEvaluation.BucketsFromBaseModel"/> says so.</para>
/// <para>Two passes (<see cref="LoopEvaluationOptions.Pass"/>): <see cref="EvaluationPass.FullDepth"/> computes every loop
/// for every token and selects each q's exit afterwards (the paper's protocol, one pass for all q);
/// <see cref="EvaluationPass.Adaptive"/> takes each q's figures from the compute-saving adaptive scorer
/// (<see cref="AdaptiveExitScorer"/>), where exited tokens stop looping, one pass per q. The step figures
/// s1..sT always come from the full-depth pass.</para>
/// <para>Sums accumulate on the device across batches (<see cref="ReadoutTally"/>) and are read to the host once, at the end.</para>
/// </summary>
public sealed class LoopEvaluator
{
    private readonly LoopEvaluationOptions _options;

    public LoopEvaluator(LoopEvaluationOptions? options = null)
    {
        _options = options ?? new LoopEvaluationOptions();
        _options.Validate();
    }

    /// <summary>Bucket names in result order (<see cref="EntropyBuckets.Names"/>).</summary>
    public static IReadOnlyList<string> BucketNames => EntropyBuckets.Names;

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
        int T = model.Config.TotalUtSteps, K = BucketNames.Count, R = T + q.Length;
        var device = model.Device;
        var buckets = _options.Buckets;
        bool top = buckets.Rule == BucketRule.TopFraction;
        var source = top ? batches.ToList() : batches;                                  // two passes over the batches
        var baseLm = baseModel is null || ReferenceEquals(baseModel, model) ? model : baseModel;
        List<Tensor>? entropies = null;                                                   // per batch (B, S), reused below
        double[] hostEntropies = [];
        if (top) (entropies, hostEntropies) = EntropyPass(baseLm, source, device);
        var cuts = buckets.Cuts(() => hostEntropies);
        var adaptive = _options.Pass == EvaluationPass.Adaptive
            ? q.Select(v => new AdaptiveExitScorer(model, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(v) })).ToArray()
            : null;

        using var tally = new ReadoutTally(K, R, device);
        // NaN/Inf logits or exit probabilities of the model, and entropies of the bucket model: counted on the device and
        // read with the results, so a model with NaN weights is refused instead of reporting argmax garbage as accuracy.
        using var nonFinite = zeros(2, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        try
        {
            int batchIndex = 0;
            foreach (var batch in source)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var (inputs, targets) = batch.ToTensors(device);
                var real = targets.AtLeast(0);                                                          // (B, S)
                var output = model.Forward(inputs);
                var (correct, gold, ownEntropy, bad) = StepReadouts(model, output, targets);        // (B, S, T) ×2, (B, S)
                var entropy = entropies is not null ? entropies[batchIndex]
                    : ReferenceEquals(baseLm, model) ? ownEntropy
                    : Objectives.LoopRptMath.TokenEntropy(baseLm.Logits(baseLm.Forward(inputs).Hidden[^1]));
                batchIndex++;
                var probs = output.ExitProbabilities();                                            // (B, S, T)
                nonFinite.PlusInPlace(stack([bad.Plus(probs.isfinite().logical_not().sum()), entropy.isfinite().logical_not().sum()]).to_type(ScalarType.Float64));

                var exitAt = HeldScalars.Arange(1, T + 1, ScalarType.Float64, device).expand(correct.shape);   // step t exits at t
                var qc = new Tensor[q.Length];
                var qg = new Tensor[q.Length];
                var qe = new Tensor[q.Length];
                for (int j = 0; j < q.Length; j++)
                {
                    if (adaptive is null)
                    {
                        var steps = ExitDistribution.QExitStep(probs, q[j]).unsqueeze(-1);               // (B, S, 1) 0-based
                        (qc[j], qg[j], qe[j]) = (correct.gather(-1, steps), gold.gather(-1, steps), steps.to_type(ScalarType.Float64).Plus(1.0));
                    }
                    else
                    {
                        using var score = adaptive[j].Score(inputs, targets: targets);
                        (qc[j], qg[j], qe[j]) = ((score.Predictions == score.Targets).to_type(ScalarType.Float64).unsqueeze(-1),
                            score.GoldLogProbs.to_type(ScalarType.Float64).unsqueeze(-1), score.ExitSteps.Plus(1L).to_type(ScalarType.Float64).unsqueeze(-1));
                    }
                }
                var masks = EntropyBuckets.Masks(entropy, real, cuts).view(K, -1);                // (K, N)
                tally.Add(masks, cat([correct, .. qc], -1).view(-1, R), cat([gold, .. qg], -1).view(-1, R), cat([exitAt, .. qe], -1).view(-1, R));
            }

            // The one host read.
            var flags = nonFinite.cpu().data<double>().ToArray();
            if (flags[0] > 0) throw NonFiniteCheck.Outputs(model, "logits or exit probabilities");
            if (flags[1] > 0) throw NonFiniteCheck.Outputs(baseModel ?? model, "next-token entropies (which define the buckets)");
            var totals = tally.Read();
            var results = new List<BucketEvaluation>(K);
            for (int k = 0; k < K; k++)
            {
                var points = Enumerable.Range(0, q.Length)
                    .Select(j => new QExitPoint(q[j], totals.Accuracy(k, T + j), totals.MeanExitStep(k, T + j)) { NegativeLogLikelihood = totals.NegativeLogLikelihood(k, T + j) })
                    .ToArray();
                results.Add(new BucketEvaluation(BucketNames[k], k == 0 ? 0 : cuts[k - 1], totals.Tokens(k),
                    Enumerable.Range(0, T).Select(t => totals.Accuracy(k, t)).ToArray(), points)
                {
                    TopFraction = top && k > 0 ? buckets.Bounds[k - 1] : null,
                    StepNegativeLogLikelihood = Enumerable.Range(0, T).Select(t => totals.NegativeLogLikelihood(k, t)).ToArray(),
                });
            }
            return new LoopEvaluation(name, T, q, baseModel is not null && !ReferenceEquals(baseModel, model), results) { Pass = _options.Pass };
        }
        finally
        {
            foreach (var e in entropies ?? []) e.Dispose();
        }
    }

    /// <summary>
    /// Per loop step: whether the argmax is the target (float64 0/1) and the target's log-probability (float64, 0 where
    /// there is no target), each (B, S, T); the last step's entropy (B, S); and the count of non-finite logits. One
    /// step's (B, S, V) logits are alive at a time.
    /// </summary>
    private static (Tensor Correct, Tensor Gold, Tensor LastEntropy, Tensor NonFinite) StepReadouts(OuroForCausalLM model, LoopOutput output, Tensor targets)
    {
        var correct = new Tensor[output.Hidden.Count];
        var gold = new Tensor[correct.Length];
        Tensor entropy = null!, bad = zeros(1, dtype: ScalarType.Float64, device: targets.device).squeeze();
        var real = targets.AtLeast(0).to_type(ScalarType.Float64);
        for (int t = 0; t < correct.Length; t++)
        {
            using var scope = NewDisposeScope();
            var logits = model.Logits(output.Hidden[t]).to_type(ScalarType.Float32);                            // (B, S, V)
            var logp = F.log_softmax(logits, -1);
            correct[t] = scope.MoveToOuter((logp.argmax(-1) == targets).to_type(ScalarType.Float64));
            gold[t] = scope.MoveToOuter(logp.gather(-1, targets.ClampMin(0).unsqueeze(-1)).squeeze(-1).to_type(ScalarType.Float64) * real);
            bad = scope.MoveToOuter(bad.Plus(logits.isfinite().logical_not().sum().to_type(ScalarType.Float64)));
            if (t == correct.Length - 1) entropy = scope.MoveToOuter(-(logp.exp() * logp).sum(-1));
        }
        return (stack(correct, -1), stack(gold, -1), entropy, bad);
    }

    /// <summary>Loss, accuracy and mean exit step of one exit rule (<see cref="EvaluateExit"/>).</summary>
    /// <param name="Tokens">Predicted tokens counted.</param>
    /// <param name="Accuracy">Fraction whose argmax under the rule is the target.</param>
    /// <param name="NegativeLogLikelihood">Mean -log p(target) in nats.</param>
    /// <param name="MeanExitStep">Mean 1-indexed exit step (expected step for <see cref="ExitMode.Expected"/>).</param>
    public sealed record ExitEvaluation(long Tokens, double Accuracy, double NegativeLogLikelihood, double MeanExitStep);

    /// <summary>
    /// Next-token loss and accuracy of <paramref name="model"/> read out under <paramref name="exit"/> (any rule, expected
    /// logits included), every loop computed, one dispose scope per batch, the sums read once at the end.
    /// </summary>
    /// <exception cref="NotFiniteNumberException">The loss is not finite (NaN weights, overflow).</exception>
    public static ExitEvaluation EvaluateExit(OuroForCausalLM model, IEnumerable<TokenBatch> batches, ExitMode exit, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        ArgumentNullException.ThrowIfNull(exit);
        TorchNative.EnsureLoaded();
        using var tally = new ReadoutTally(1, 1, model.Device);
        using var noGrad = no_grad();
        foreach (var batch in batches)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var (inputs, targets) = batch.ToTensors(model.Device);                                // (B, S)
            var output = model.Forward(inputs);
            var logp = F.log_softmax(exit.Logits(model, output).to_type(ScalarType.Float32), -1); // (B, S, V)
            var gold = logp.gather(-1, targets.ClampMin(0).unsqueeze(-1)).squeeze(-1);
            var probs = output.ExitProbabilities();
            var step = exit.Kind == ExitKind.ExpectedLogits ? ExitDistribution.ExpectedExitStep(probs) : exit.Steps(probs).to_type(ScalarType.Float32).Plus(1.0);
            tally.Add(targets.AtLeast(0).view(1, -1), (logp.argmax(-1) == targets).view(-1, 1), gold.view(-1, 1), step.view(-1, 1));
        }
        var totals = tally.Read();
        if (totals.HasNonFinite) throw NonFiniteCheck.Outputs(model, "log-probabilities");
        return new ExitEvaluation(totals.Tokens(0), totals.Accuracy(0, 0), totals.NegativeLogLikelihood(0, 0), totals.MeanExitStep(0, 0));
    }

    /// <summary>
    /// The entropy source's last-step entropy of every batch, (B, S) each, kept for the second pass, and the entropies of
    /// the real tokens on the host (one read) for the top-fraction cut points.
    /// </summary>
    private static (List<Tensor> Entropies, double[] Real) EntropyPass(OuroForCausalLM entropyModel, IEnumerable<TokenBatch> batches, Device device)
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
                var entropy = Objectives.LoopRptMath.TokenEntropy(entropyModel.Logits(entropyModel.Forward(inputs).Hidden[^1]));
                list.Add(entropy.clone().DetachFromDisposeScope());
                real.Add(entropy.masked_select(targets.AtLeast(0)).to_type(ScalarType.Float64).MoveToOuterDisposeScope());
            }
            return (list, real.Count == 0 ? [] : cat(real.ToArray(), 0).cpu().data<double>().ToArray());
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
