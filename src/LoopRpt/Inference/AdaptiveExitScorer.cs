using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>Options of <see cref="AdaptiveExitScorer"/>.</summary>
public sealed class AdaptiveExitScorerOptions
{
    /// <summary>Defaults, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Sequences per batch in <see cref="AdaptiveExitScorer.Evaluate"/>.</summary>
        public const int BatchSize = 16;

        /// <summary>Pad id used to fill right-padded batches (never computed, never scored).</summary>
        public const long PadId = 0;
    }

    /// <summary>
    /// The exit rule: <see cref="ExitMode.Q"/> (adaptive), <see cref="ExitMode.Fixed"/>, or <see cref="ExitMode.Last"/>.
    /// Null means the model config's <c>early_exit_threshold</c> when set, else the last loop.
    /// <see cref="ExitMode.Expected"/> needs every loop and is rejected.
    /// </summary>
    public ExitMode? Exit { get; init; }

    /// <summary>Sequences per batch when scoring many sequences.</summary>
    public int BatchSize { get; init; } = Defaults.BatchSize;

    /// <summary>Pad id for right padding.</summary>
    public long PadId { get; init; } = Defaults.PadId;
}

/// <summary>
/// Teacher-forced scoring of whole sequences with an adaptive exit that really saves compute (docs/adaptive-exit.md).
/// <para>
/// Ouro's reference code runs every loop for every token and selects the exit afterwards. This scorer stops computing
/// a token once its exit CDF reaches q: later loops run projections and MLP only on the still-active tokens, attention
/// at later loops still sees every position with exited tokens contributing the keys/values of their exit loop, and
/// the LM head runs once per token on its exit state. With q = 1 it equals the full-depth path; with exits, a token
/// differs from "compute all, then select" only through earlier tokens that exited before it (their frozen keys/values
/// stand in for the ones they would have computed).
/// </para>
/// </summary>
/// <remarks>
/// | Output (per position, (B, S)) | Meaning |
/// |---|---|
/// | GoldLogProbs | log p(target) at the exit state, float32; 0 where there is no target |
/// | ExitSteps | exit loop, 0-based int64; -1 at padding |
/// | Predictions | argmax next token at the exit state; -1 at padding |
/// | PredictionLogProbs | log p(argmax) at the exit state; 0 at padding |
/// | Entropies | entropy (nats) of the next-token distribution at the exit state; 0 at padding |
/// | Targets | the scored next token; -1 where none |
///
/// | Characteristic | |
/// |---|---|
/// | GPU | optional (device-agnostic tensor code) |
/// | Native package | libtorch (TorchSharp) |
/// | Gradients | none (runs under no_grad) |
/// </remarks>
public sealed class AdaptiveExitScorer
{
    private readonly SequencePass _pass;

    /// <summary>Creates a scorer for <paramref name="lm"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The exit rule is expected logits, a fixed step beyond the model's loops, or the batch size is below 1.</exception>
    public AdaptiveExitScorer(OuroForCausalLM lm, AdaptiveExitScorerOptions? options = null)
    {
        Options = options ?? new AdaptiveExitScorerOptions();
        _pass = new SequencePass(lm, Options.Exit, Options.BatchSize, nameof(options));
    }

    /// <summary>The options in use (never mutated).</summary>
    public AdaptiveExitScorerOptions Options { get; }

    /// <summary>
    /// Scores one batch. Targets default to the next token of each sequence (none at its last position).
    /// </summary>
    /// <param name="inputIds">Token ids (B, S), int64, right-padded when <paramref name="lengths"/> is given.</param>
    /// <param name="lengths">Valid length of each row (B); null means every row is full. Padding is neither computed nor scored.</param>
    /// <param name="targets">Gold next tokens (B, S), -1 = not scored; null means the shifted input.</param>
    /// <returns>Per-token results in a new dispose scope owned by the returned object.</returns>
    /// <exception cref="NotFiniteNumberException">The log-probabilities are not finite (NaN weights, overflow).</exception>
    public AdaptiveScore Score(Tensor inputIds, Tensor? lengths = null, Tensor? targets = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2 || inputIds.dtype != ScalarType.Int64)
            throw new ArgumentException($"Expected int64 token ids of shape (B, S), got {inputIds.dtype} ({string.Join(", ", inputIds.shape)}).", nameof(inputIds));
        long b = inputIds.shape[0], s = inputIds.shape[1];
        if (s > _pass.Model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(inputIds), s, $"Sequence length {s} exceeds max_position_embeddings = {_pass.Model.Config.MaxPositionEmbeddings}.");
        if (lengths is not null && (lengths.dim() != 1 || lengths.shape[0] != b))
            throw new ArgumentException($"Expected lengths of shape ({b}), got ({string.Join(", ", lengths.shape)}).", nameof(lengths));
        if (targets is not null && !targets.shape.SequenceEqual(inputIds.shape))
            throw new ArgumentException($"Expected targets of shape ({b}, {s}), got ({string.Join(", ", targets.shape)}).", nameof(targets));

        var device = _pass.Model.Device;
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = inputIds.to(device);
        var positions = HeldScalars.Arange(0, s, ScalarType.Int64, device).unsqueeze(0);                                    // (1, S)
        // Rows that are all valid need no mask: the all-active fast path (dense causal attention) then applies.
        var valid = lengths is null || lengths.min().item<long>() >= s ? null : positions < lengths.to(device).unsqueeze(1); // (B, S)
        var gold = targets?.to(device).clone() ?? ShiftedTargets(ids, lengths?.to(device));      // our own copy: the result owns it
        if (valid is not null) gold = gold.MaskedFill(~valid, -1);

        var run = _pass.Run(ids, valid);

        // LM head once per computed token, on its exit state.
        var flatValid = valid?.reshape(-1).nonzero().squeeze(1);                                    // (M) or all
        var states = flatValid is null ? run.States : run.States.index_select(0, flatValid);        // (M, H)
        var flatGold = gold.reshape(-1);
        var tokenGold = flatValid is null ? flatGold : flatGold.index_select(0, flatValid);          // (M)
        var read = ReadOut(states, tokenGold);
        var goldLogProbs = Scatter(read.GoldLogProbs, flatValid, b * s, 0.0).view(b, s);
        var predictions = Scatter(read.Argmax, flatValid, b * s, -1.0).view(b, s);
        var predictionLogProbs = Scatter(read.MaxLogProbs, flatValid, b * s, 0.0).view(b, s);
        var entropies = Scatter(read.Entropies, flatValid, b * s, 0.0).view(b, s);
        var exitSteps = run.ExitSteps.view(b, s);

        var result = new AdaptiveScore(goldLogProbs, exitSteps, predictions, gold, predictionLogProbs, entropies, _pass.Model.Config.TotalUtSteps, run.LoopsRun);
        // The result's sums are read to the host already: refuse NaN/Inf log-probabilities (NaN weights, overflow) there.
        if (!double.IsFinite(result.SumGoldLogProb)) throw NonFiniteCheck.Outputs(_pass.Model, "log-probabilities");
        outer.MoveToOuter(result.GoldLogProbs, result.ExitSteps, result.Predictions, result.Targets, result.PredictionLogProbs, result.Entropies);
        return result;
    }

    /// <summary>
    /// Scores many sequences in right-padded batches of <see cref="AdaptiveExitScorerOptions.BatchSize"/> and sums the results.
    /// Each sequence is scored on its own next tokens; sequences shorter than 2 tokens add compute but no scored token.
    /// </summary>
    public AdaptiveExitSummary Evaluate(IEnumerable<IReadOnlyList<long>> sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var total = new AdaptiveExitSummary.Builder(_pass.Model.Config.TotalUtSteps);
        foreach (var batch in sequences.Chunk(Options.BatchSize))
        {
            using var scope = NewDisposeScope();
            var (ids, lengths) = Pad(batch, Options.PadId);
            using var score = Score(ids, lengths);
            total.Add(score);
        }
        return total.Build();
    }

    /// <summary>Right-pads sequences into ids (B, S_max) and lengths (B).</summary>
    public static (Tensor Ids, Tensor Lengths) Pad(IReadOnlyList<IReadOnlyList<long>> sequences, long padId = AdaptiveExitScorerOptions.Defaults.PadId)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) throw new ArgumentException("At least one sequence is needed.", nameof(sequences));
        int longest = sequences.Max(x => x.Count);
        if (longest == 0) throw new ArgumentException("Every sequence is empty.", nameof(sequences));
        var data = new long[sequences.Count * longest];
        Array.Fill(data, padId);
        for (int i = 0; i < sequences.Count; i++)
            for (int j = 0; j < sequences[i].Count; j++) data[i * longest + j] = sequences[i][j];
        return (tensor(data, [sequences.Count, longest]), tensor(sequences.Select(x => (long)x.Count).ToArray()));
    }

    /// <summary>Next token of each row as the target, -1 at the last valid position; (B, S).</summary>
    private static Tensor ShiftedTargets(Tensor ids, Tensor? lengths)
    {
        long b = ids.shape[0], s = ids.shape[1];
        var shifted = cat([ids.narrow(1, 1, s - 1), HeldScalars.Full([b, 1], -1L, ScalarType.Int64, ids.device)], 1);
        if (lengths is null) return shifted;
        var positions = HeldScalars.Arange(0, s, ScalarType.Int64, ids.device).unsqueeze(0);
        return shifted.MaskedFill(positions >= lengths.unsqueeze(1).Plus(-1L), -1);
    }

    /// <summary>Test hook: called after each LM-head block with its row count (at most one block's logits are alive).</summary>
    internal Action<long>? AfterReadOutBlock { get; set; }

    /// <summary>Test hook: rows per LM-head block (default: about 64 MB of float32 logits).</summary>
    internal long? ReadOutBlockRows { get; set; }

    /// <summary>Test hook into the runner (see <see cref="AdaptiveLoopRunner.AfterLayer"/>).</summary>
    internal Action<int, int>? AfterLayer { set => _pass.Runner.AfterLayer = value; }

    /// <summary>The read-out of a set of exit states, (M) each.</summary>
    private readonly record struct ReadOutResult(Tensor GoldLogProbs, Tensor Argmax, Tensor MaxLogProbs, Tensor Entropies);

    /// <summary>
    /// Gold log-prob (0 without a target), argmax, its log-prob and the entropy (nats) of the next-token distribution
    /// per state, the LM head applied in row blocks to bound memory.
    /// </summary>
    private ReadOutResult ReadOut(Tensor states, Tensor gold)
    {
        long m = states.shape[0];
        long block = ReadOutBlockRows ?? Math.Max(1, (1L << 24) / _pass.Model.Config.VocabSize);         // ~64 MB of float32 logits
        var logProbs = new List<Tensor>();
        var argmax = new List<Tensor>();
        var maxLogProbs = new List<Tensor>();
        var entropies = new List<Tensor>();
        for (long start = 0; start < m; start += block)
        {
            long len = Math.Min(block, m - start);
            // One scope per block: its (len, V) logits are freed before the next block, so at most one block is alive.
            using var scope = NewDisposeScope();
            using var section = InferenceProfile.Time("lm_head");
            var logp = F.log_softmax(_pass.Model.Logits(states.narrow(0, start, len)).to_type(ScalarType.Float32), -1); // (len, V)
            var g = gold.narrow(0, start, len);
            logProbs.Add(scope.MoveToOuter(logp.gather(-1, g.ClampMin(0).unsqueeze(-1)).squeeze(-1) * g.AtLeast(0).to_type(ScalarType.Float32)));
            argmax.Add(scope.MoveToOuter(logp.argmax(-1)));
            maxLogProbs.Add(scope.MoveToOuter(logp.max(-1).values));
            entropies.Add(scope.MoveToOuter(logp.exp().mul(logp).sum(-1).neg()));
            AfterReadOutBlock?.Invoke(len);
        }
        if (m == 0)
        {
            var none = empty(0, device: states.device);
            return new(none, empty(0, dtype: ScalarType.Int64, device: states.device), none.clone(), none.clone());
        }
        return new(cat(logProbs, 0), cat(argmax, 0), cat(maxLogProbs, 0), cat(entropies, 0));
    }

    private static Tensor Scatter(Tensor values, Tensor? rows, long n, double fill)
        => rows is null ? values : HeldScalars.Full([n], fill, values.dtype, values.device).index_copy_(0, rows, values);
}
