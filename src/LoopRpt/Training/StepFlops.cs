using LoopRpt.Model;
using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>One part of a step's compute: its forward and backward FLOPs.</summary>
/// <param name="Name">What it is ("teacher pass", "rollouts", ...).</param>
/// <param name="Forward">Forward FLOPs.</param>
/// <param name="Backward">Backward FLOPs (0 for a pass without a graph).</param>
public sealed record FlopTerm(string Name, double Forward, double Backward)
{
    /// <summary>Forward + backward.</summary>
    public double Total => Forward + Backward;
}

/// <summary>
/// The analytic forward + backward FLOPs of one optimizer step of an objective (docs/experiment.md §4.1),
/// counting matrix multiplies only (2 FLOPs per multiply-add), as <see cref="OuroConfig.TrainingFlopsPerToken"/> does:
/// per token and loop, every layer's projections, MLP and attention scores/values at the full sequence length (the causal
/// half not discounted); the exit gate (2h) at every loop; the LM head (2hV) at every read-out. A backward pass costs twice
/// its forward (the gradients of the inputs and of the weights). Elementwise work (norms, softmax, noise, the EMA update,
/// the optimizer) is left out. The equal-compute Stage I control is sized by these counts
/// (<see cref="Experiments.LoopRptExperiment"/>).
/// </summary>
/// <param name="Terms">The parts, each for the whole step (every micro-batch).</param>
public sealed record StepFlops(IReadOnlyList<FlopTerm> Terms)
{
    /// <summary>Forward FLOPs of the step.</summary>
    public double Forward => Terms.Sum(t => t.Forward);

    /// <summary>Backward FLOPs of the step.</summary>
    public double Backward => Terms.Sum(t => t.Backward);

    /// <summary>Forward + backward FLOPs of the step.</summary>
    public double Total => Forward + Backward;

    /// <summary>Forward FLOPs per token of one loop through every layer at sequence length <paramref name="sequenceLength"/>.</summary>
    public static double LoopPerToken(OuroConfig config, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(config);
        double h = config.HiddenSize, d = config.HeadDim;
        double projections = 2 * (h * config.NumAttentionHeads * d * 2 + h * config.NumKeyValueHeads * d * 2);
        double mlp = 2 * 3 * h * config.IntermediateSize;
        double attention = 2 * 2 * (double)sequenceLength * config.NumAttentionHeads * d;
        return config.NumHiddenLayers * (projections + mlp + attention);
    }

    /// <summary>Forward FLOPs of one LM-head read-out of one token (2hV).</summary>
    public static double HeadPerToken(OuroConfig config) => 2.0 * config.HiddenSize * config.VocabSize;

    /// <summary>Forward FLOPs of the exit gate at one loop for one token (2h).</summary>
    public static double GatePerToken(OuroConfig config) => 2.0 * config.HiddenSize;

    /// <summary>
    /// Ouro Stage I (<see cref="PretrainObjective"/>): one pass of T loops with the gate and a read-out at every loop on
    /// every position, and its backward; <paramref name="rows"/> × <paramref name="sequenceLength"/> positions per micro-batch.
    /// </summary>
    public static StepFlops Stage1(OuroConfig config, int rows, int sequenceLength, int microBatches = 1)
    {
        Check(config, rows, sequenceLength, microBatches);
        double n = (double)rows * sequenceLength * microBatches, T = config.TotalUtSteps;
        double forward = n * T * (LoopPerToken(config, sequenceLength) + GatePerToken(config) + HeadPerToken(config));
        return new StepFlops([new FlopTerm("student pass, read-out at every loop", forward, 2 * forward)]);
    }

    /// <summary>
    /// LoopRPT (<see cref="LoopRptObjective"/>) per optimizer step, from the batch's rows (their real-target counts) and the
    /// objective's options: the EMA teacher's pass (no gradient: T loops, the entropy read-out at the last loop on every
    /// position, gold read-outs at every loop on the hard tokens); the shared loop 0 (forward once, backward once); the clean
    /// pass (loops 1..T−1, gates, read-outs at every loop on the hard tokens, with backward) and its per-step loss metric
    /// (read-outs at every loop on every position, no gradient); G rollouts (loops 1..T−1 and gates with backward; their
    /// hard-token read-outs with backward only when the rollout KL has a gradient); and, when rollouts run in chunks, their
    /// extra forward without a graph.
    /// </summary>
    /// <param name="config">The model.</param>
    /// <param name="targetsPerRow">Real (non-padding) targets of each row of a micro-batch; the count of rows is the batch size.</param>
    /// <param name="sequenceLength">Positions per row.</param>
    /// <param name="options">The objective's options (rollouts, hard-token rule, KL, chunking).</param>
    /// <param name="microBatches">Micro-batches per optimizer step (gradient accumulation).</param>
    public static StepFlops LoopRpt(OuroConfig config, IReadOnlyList<int> targetsPerRow, int sequenceLength, LoopRptObjectiveOptions options, int microBatches = 1)
    {
        ArgumentNullException.ThrowIfNull(targetsPerRow);
        ArgumentNullException.ThrowIfNull(options);
        Check(config, targetsPerRow.Count, sequenceLength, microBatches);
        options.Validate();
        if (targetsPerRow.Any(n => n < 0 || n > sequenceLength))
            throw new ArgumentOutOfRangeException(nameof(targetsPerRow), $"Each row's target count must lie in [0, {sequenceLength}].");
        double m = microBatches, T = config.TotalUtSteps, G = options.Rollouts;
        double n = (double)targetsPerRow.Count * sequenceLength * m;
        double k = targetsPerRow.Sum(r => (double)HardTokens(r, options)) * m;
        double loop = LoopPerToken(config, sequenceLength), gate = GatePerToken(config), head = HeadPerToken(config);
        double branch = n * ((T - 1) * loop + T * gate);                   // loops 1..T−1 and every gate, from the shared loop 0
        double readouts = k * T * head;                                    // gold read-outs at every loop, hard tokens only
        bool klGraph = options.KlCoef != 0 && options.Kl == KlVariant.Rollout;
        var terms = new List<FlopTerm>
        {
            new("teacher pass (no gradient)", n * T * (loop + gate) + n * head + readouts, 0),
            new("shared loop 0", n * loop, 2 * n * loop),
            new("clean pass", branch + readouts, 2 * (branch + readouts)),
            new("clean per-step loss metric (no gradient)", n * T * head, 0),
            new("rollouts", G * (branch + readouts), 2 * G * (branch + (klGraph ? readouts : 0))),
        };
        if (options.ChunkSize < options.Rollouts)
            terms.Add(new("rollouts, reward pass without a graph (chunked)", G * (branch + readouts), 0));
        return new StepFlops(terms);
    }

    /// <summary>
    /// Hard tokens of a row with <paramref name="targets"/> real targets: ⌈(n − 1)(1 − q)⌉ for the top fraction (exact ties
    /// aside), every target for <see cref="HardTokenMode.All"/>, and every target as the upper bound for an entropy threshold
    /// (which depends on the teacher's entropies).
    /// </summary>
    public static long HardTokens(int targets, LoopRptObjectiveOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(targets);
        if (options.HardTokens != HardTokenMode.TopFraction || targets == 0) return targets;
        // As LoopRptMath.TopFraction: lo = ⌊(n − 1) q⌋ (nudged so that an exact product is not floored below), keep n − 1 − lo.
        long lo = (long)Math.Floor((targets - 1) * options.HardTokenQuantile + 1e-9);
        return Math.Max(0, targets - 1 - lo);
    }

    private static void Check(OuroConfig config, int rows, int sequenceLength, int microBatches)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatches, 1);
    }
}
