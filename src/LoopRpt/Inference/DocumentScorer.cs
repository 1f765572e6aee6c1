using LoopRpt.Data;
using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>Where a window lies in its document: tokens [Start, Start + Length).</summary>
/// <param name="Start">First token of the window.</param>
/// <param name="Length">Tokens in the window.</param>
public readonly record struct DocumentWindow(int Start, int Length);

/// <summary>
/// The one document scorer of LoopRpt: teacher-forced scoring of whole documents, used by <c>looprpt score</c>,
/// <c>POST /v1/score</c>, hosting's <c>ModelScoring</c> and ML.NET's <c>AdaptiveExitScoringTransformer</c>
/// (docs/adaptive-exit.md, "Scoring documents").
/// <para><b>What is scored.</b> A document of n tokens has n - 1 scored positions: position k (0-based) predicts token
/// k + 1. For each, the log-probability of that gold token, the 1-indexed exit step, the entropy of the next-token
/// distribution and whether its argmax is the gold token, all read out at the token's exit. The document's mean exit
/// step is the mean over these n - 1 positions (<see cref="ScoreTotals.MeanExitStep"/>); the last token, which
/// predicts nothing in the document, only gives <see cref="ScoredDocument.NextToken"/>.</para>
/// <para><b>Windows.</b> With C the context length, window w covers tokens [w(C - 1), min(n, w(C - 1) + C)): windows
/// overlap by one token, the last input of a window being the first of the next, and the last window may be shorter
/// (<see cref="Windows"/>). Each window starts with an empty context and predicts its own tokens 2..L, so every token
/// after the first is scored exactly once, from the tokens before it in its window. Nothing is truncated.</para>
/// <para><b>Batches.</b> Windows of all documents are grouped by their padded length P = min(C, L rounded up to a multiple
/// of <see cref="DocumentScorerOptions.Defaults.PadMultiple"/>) and run <see cref="DocumentScorerOptions.BatchSize"/> at a
/// time; padding is never computed on the adaptive pass and never scored. A document's scores therefore depend on its
/// tokens, not on the documents it is batched with (up to the last bits of CPU kernels chosen by batch shape).</para>
/// </summary>
public sealed class DocumentScorer
{
    private readonly OuroForCausalLM _lm;
    private readonly ExitMode _exit;
    private readonly AdaptiveExitScorer? _adaptive;

    /// <summary>Creates a scorer for <paramref name="lm"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The batch size is below 1, the context length below 2, or the fixed exit step beyond the model's loops.</exception>
    public DocumentScorer(OuroForCausalLM lm, DocumentScorerOptions? options = null)
    {
        _lm = lm ?? throw new ArgumentNullException(nameof(lm));
        Options = options ?? new DocumentScorerOptions();
        if (Options.BatchSize < 1)
            throw new ArgumentOutOfRangeException(nameof(options), Options.BatchSize, "BatchSize must be at least 1.");
        if (Options.ContextLength < 2)
            throw new ArgumentOutOfRangeException(nameof(options), Options.ContextLength, "ContextLength must be at least 2 (a window scores its tokens after the first).");
        _exit = Options.Exit ?? (lm.Config.EarlyExitThreshold is { } q ? ExitMode.Q(q) : ExitMode.Last);
        FullDepth = Options.FullDepth || Options.PerStepStatistics || _exit.Kind == ExitKind.ExpectedLogits;
        if (_exit.Kind != ExitKind.ExpectedLogits) _ = ExitRule.From(_exit, lm.Config, nameof(options));   // validates a fixed step
        if (!FullDepth) _adaptive = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = _exit, BatchSize = Options.BatchSize });
        ContextLength = Math.Min(Options.ContextLength, lm.Config.MaxPositionEmbeddings);
    }

    /// <summary>The options in use (never mutated).</summary>
    public DocumentScorerOptions Options { get; }

    /// <summary>The exit rule in use (<see cref="DocumentScorerOptions.Exit"/> resolved against the model's config).</summary>
    public ExitMode Exit => _exit;

    /// <summary>True when the full-depth pass runs (asked for, or needed by expected logits or per-step statistics).</summary>
    public bool FullDepth { get; }

    /// <summary>The window length C in use: <see cref="DocumentScorerOptions.ContextLength"/> capped by the model's <c>max_position_embeddings</c>.</summary>
    public int ContextLength { get; }

    /// <summary>
    /// The windows of a document of <paramref name="tokens"/> tokens: [w(C - 1), min(n, w(C - 1) + C)) for w = 0, 1, ...
    /// until the document's end; none for an empty document, one of one token for a one-token document.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative token count or a context length below 2.</exception>
    public static IReadOnlyList<DocumentWindow> Windows(int tokens, int contextLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (contextLength < 2)
            throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "The context length must be at least 2.");
        var windows = new List<DocumentWindow>();
        for (int start = 0; start < tokens; start += contextLength - 1)
        {
            int length = Math.Min(contextLength, tokens - start);
            windows.Add(new DocumentWindow(start, length));
            if (start + length == tokens) break;
        }
        return windows;
    }

    /// <summary>Scores one document (see <see cref="Score(IReadOnlyList{IReadOnlyList{int}})"/>).</summary>
    public ScoredDocument Score(IReadOnlyList<int> document)
    {
        ArgumentNullException.ThrowIfNull(document);
        return Score([document])[0];
    }

    /// <summary>
    /// Scores <paramref name="documents"/> (token ids; an empty document gives an empty score), their windows batched
    /// together. Call from one thread per scorer; several scorers may share a model.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the model's vocabulary.</exception>
    /// <exception cref="NotFiniteNumberException">The scores are not finite (NaN weights, overflow).</exception>
    public IReadOnlyList<ScoredDocument> Score(IReadOnlyList<IReadOnlyList<int>> documents)
    {
        CheckIds(documents);
        var acc = documents.Select(d => new Accumulator(d.Count, Loops, Options.PerStepStatistics)).ToArray();
        foreach (var batch in Plan(documents, scoredOnly: false))
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var read = FullDepth ? RunFullDepth(batch) : RunAdaptive(batch);
            Distribute(batch, read, acc);
        }
        return acc.Select(a => a.Build()).ToList();
    }

    /// <summary>
    /// The windows <see cref="Score(IReadOnlyList{IReadOnlyList{int}})"/> scores, as batches for
    /// <c>LoopEvaluator</c> (inputs padded with 0, targets the next tokens, <see cref="TokenBatch.IgnoreIndex"/> past each
    /// window): the windows of every document with at least two tokens, grouped and batched as the scorer does.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the model's vocabulary.</exception>
    public IReadOnlyList<TokenBatch> Batches(IReadOnlyList<IReadOnlyList<int>> documents)
    {
        CheckIds(documents);
        return Plan(documents, scoredOnly: true).Select(b => b.ToTokenBatch()).ToList();
    }

    private int Loops => _lm.Config.TotalUtSteps;

    private void CheckIds(IReadOnlyList<IReadOnlyList<int>> documents)
    {
        ArgumentNullException.ThrowIfNull(documents);
        int vocab = _lm.Config.VocabSize;
        for (int d = 0; d < documents.Count; d++)
        {
            var doc = documents[d] ?? throw new ArgumentNullException(nameof(documents), $"Document {d} is null.");
            for (int i = 0; i < doc.Count; i++)
                if ((uint)doc[i] >= (uint)vocab)
                    throw new ArgumentOutOfRangeException(nameof(documents), doc[i],
                        $"Document {d} holds token id {doc[i]} at position {i}, outside the model's vocabulary [0, {vocab}); was it tokenized with the tokenizer this model was trained with?");
        }
    }

    /// <summary>One window of one document, padded to <paramref name="Padded"/> positions.</summary>
    private readonly record struct Unit(int Document, IReadOnlyList<int> Tokens, int Start, int Length, int Padded);

    /// <summary>A (B, P) batch of windows.</summary>
    private sealed record Batch(Unit[] Units, int Padded)
    {
        public int Rows => Units.Length;

        /// <summary>Inputs (B * P), 0 past each window.</summary>
        public long[] Ids()
        {
            var ids = new long[Rows * Padded];
            for (int i = 0; i < Rows; i++)
                for (int j = 0; j < Units[i].Length; j++) ids[i * Padded + j] = Units[i].Tokens[Units[i].Start + j];
            return ids;
        }

        public TokenBatch ToTokenBatch()
        {
            var targets = new long[Rows * Padded];
            Array.Fill(targets, TokenBatch.IgnoreIndex);
            for (int i = 0; i < Rows; i++)
                for (int j = 0; j + 1 < Units[i].Length; j++) targets[i * Padded + j] = Units[i].Tokens[Units[i].Start + j + 1];
            return new TokenBatch(Ids(), targets, Rows, Padded);
        }
    }

    /// <summary>Windows grouped by padded length (groups in order of first appearance), <see cref="DocumentScorerOptions.BatchSize"/> per batch.</summary>
    private IEnumerable<Batch> Plan(IReadOnlyList<IReadOnlyList<int>> documents, bool scoredOnly)
    {
        int pad = DocumentScorerOptions.Defaults.PadMultiple;
        var units = new List<Unit>();
        for (int d = 0; d < documents.Count; d++)
        {
            if (scoredOnly && documents[d].Count < 2) continue;
            foreach (var w in Windows(documents[d].Count, ContextLength))
                units.Add(new Unit(d, documents[d], w.Start, w.Length, Math.Min(ContextLength, (w.Length + pad - 1) / pad * pad)));
        }
        return units.GroupBy(u => u.Padded).SelectMany(g => g.Chunk(Options.BatchSize).Select(c => new Batch(c, g.Key)));
    }

    /// <summary>A batch's read-out on the host, (B * P) each; <see cref="StepCorrect"/> (B * P * T) when asked for.</summary>
    private sealed record Readout(float[] Gold, float[] ExitSteps, float[] Entropies, long[] Predictions, float[] PredictionLogProbs,
        float[]? StepCorrect, bool AllLoops);

    /// <summary>The compute-saving pass: tokens stop looping at their exit; padding is never computed.</summary>
    private Readout RunAdaptive(Batch batch)
    {
        var lengths = tensor(batch.Units.Select(u => (long)u.Length).ToArray());
        using var score = _adaptive!.Score(tensor(batch.Ids(), [batch.Rows, batch.Padded]), lengths);   // targets: each window's next tokens
        return new Readout(Host(score.GoldLogProbs), OneIndexed(Host(score.ExitSteps)), Host(score.Entropies),
            score.Predictions.cpu().data<long>().ToArray(), Host(score.PredictionLogProbs), null, AllLoops: false);
    }

    /// <summary>
    /// "Compute all, then select": every loop for every token, each token read out at the exit the rule selects (or from
    /// the expected logits). The LM head runs one row at a time: (1, P, V) logits bound the memory for large vocabularies.
    /// </summary>
    private Readout RunFullDepth(Batch batch)
    {
        int b = batch.Rows, p = batch.Padded, T = Loops;
        var ids = tensor(batch.Ids(), [b, p]).to(_lm.Device);                                  // (B, P)
        var output = _lm.Forward(ids);
        var probs = output.ExitProbabilities();                                              // (B, P, T)
        var exitSteps = _exit.Kind == ExitKind.ExpectedLogits
            ? Host(ExitDistribution.ExpectedExitStep(probs))                                 // (B * P), 1-indexed already
            : OneIndexed(Host(_exit.Steps(probs)));
        var gold = new float[b * p];
        var entropies = new float[b * p];
        var predictions = new long[b * p];
        var predictionLogProbs = new float[b * p];
        var stepCorrect = Options.PerStepStatistics ? new float[b * p * T] : null;
        // Next tokens (B, P), 0 where a position scores nothing (those read-outs are never distributed): no clamp needed.
        var targets = tensor(batch.ToTokenBatch().Targets.Select(t => Math.Max(t, 0L)).ToArray(), [b, p]).to(_lm.Device);
        for (int i = 0; i < b; i++)
        {
            using var rowScope = NewDisposeScope();
            var row = new LoopOutput(output.Hidden.Select(h => h.narrow(0, i, 1)).ToList(), output.GateLogits.narrow(0, i, 1));
            var rowTargets = targets.narrow(0, i, 1);                                          // (1, P)
            var logp = F.log_softmax(_exit.Logits(_lm, row).to_type(ScalarType.Float32), -1);   // (1, P, V)
            var (best, argmax) = logp.max(-1);
            Host(logp.gather(-1, rowTargets.unsqueeze(-1)).squeeze(-1)).CopyTo(gold, i * p);
            Host(logp.exp().mul(logp).sum(-1).neg()).CopyTo(entropies, i * p);
            Host(best).CopyTo(predictionLogProbs, i * p);
            argmax.cpu().data<long>().ToArray().CopyTo(predictions, i * p);
            if (stepCorrect is not null)
                Host(stack(row.Hidden.Select(h => _lm.Logits(h).argmax(-1).eq(rowTargets).to_type(ScalarType.Float32)).ToArray(), -1)).CopyTo(stepCorrect, i * p * T);   // (1, P, T)
        }
        return new Readout(gold, exitSteps, entropies, predictions, predictionLogProbs, stepCorrect, AllLoops: true);
    }

    /// <summary>Copies each window's scored positions into its document (window position j predicts document token Start + j + 1).</summary>
    private void Distribute(Batch batch, Readout read, Accumulator[] acc)
    {
        int p = batch.Padded, T = Loops;
        for (int i = 0; i < batch.Rows; i++)
        {
            var u = batch.Units[i];
            var a = acc[u.Document];
            for (int j = 0; j < u.Length; j++)
            {
                int at = i * p + j;
                a.LoopsSpent += read.AllLoops ? T : (long)read.ExitSteps[at];
                if (j + 1 == u.Length)
                {
                    // The window's last token predicts nothing inside it: the next window (or NextToken) takes over.
                    if (u.Start + u.Length == u.Tokens.Count) (a.NextToken, a.NextTokenLogProb) = ((int)read.Predictions[at], read.PredictionLogProbs[at]);
                    continue;
                }
                if (!float.IsFinite(read.Gold[at]) || !float.IsFinite(read.Entropies[at]) || !float.IsFinite(read.ExitSteps[at]))
                    throw NonFiniteCheck.Outputs(_lm, "scores (log-probabilities, entropies or exit steps)");
                int k = u.Start + j;
                a.LogProbs[k] = read.Gold[at];
                a.ExitSteps[k] = read.ExitSteps[at];
                a.Entropies[k] = read.Entropies[at];
                a.Correct[k] = read.Predictions[at] == u.Tokens[k + 1];
                if (read.StepCorrect is not null)
                    for (int t = 0; t < T; t++) a.StepCorrect![t] += (int)read.StepCorrect[at * T + t];
            }
        }
    }

    private static float[] Host(Tensor t) => t.to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    /// <summary>0-based exit loops to the 1-indexed exit steps every face reports (on the host: no per-batch Scalar).</summary>
    private static float[] OneIndexed(float[] steps)
    {
        for (int i = 0; i < steps.Length; i++) steps[i] += 1;
        return steps;
    }

    private sealed class Accumulator(int tokens, int loops, bool steps)
    {
        public float[] LogProbs { get; } = new float[Math.Max(0, tokens - 1)];
        public float[] ExitSteps { get; } = new float[Math.Max(0, tokens - 1)];
        public float[] Entropies { get; } = new float[Math.Max(0, tokens - 1)];
        public bool[] Correct { get; } = new bool[Math.Max(0, tokens - 1)];
        public int[]? StepCorrect { get; } = steps ? new int[loops] : null;
        public long LoopsSpent { get; set; }
        public int NextToken { get; set; } = -1;
        public float NextTokenLogProb { get; set; } = float.NaN;

        public ScoredDocument Build() => new(tokens, LogProbs, ExitSteps, Entropies, Correct, StepCorrect, NextToken, NextTokenLogProb, LoopsSpent, loops);
    }
}

/// <summary>Options of <see cref="DocumentScorer"/>.</summary>
public sealed class DocumentScorerOptions
{
    /// <summary>Defaults, defined once (the CLI, server, hosting and ML.NET scorers take theirs from here).</summary>
    public static class Defaults
    {
        /// <summary>Windows per forward pass.</summary>
        public const int BatchSize = 8;

        /// <summary>Longest window (tokens) per forward pass, capped by the model's <c>max_position_embeddings</c>.</summary>
        public const int ContextLength = 512;

        /// <summary>Windows are padded to a multiple of this length (and to at most the context length).</summary>
        public const int PadMultiple = 32;
    }

    /// <summary>
    /// The exit rule: <see cref="ExitMode.Q"/> (adaptive), <see cref="ExitMode.Fixed"/>, <see cref="ExitMode.Last"/> (full
    /// depth) or <see cref="ExitMode.Expected"/> (expected logits; always runs the full-depth pass). Null means the model
    /// config's <c>early_exit_threshold</c> when set, else the last loop.
    /// </summary>
    public ExitMode? Exit { get; init; }

    /// <summary>
    /// Run every loop for every token and select each token's exit afterwards ("compute all, then select"), instead of
    /// the compute-saving adaptive pass where a token stops looping at its exit (docs/adaptive-exit.md). The two agree at
    /// the last loop and at a fixed step; under Q-exit they differ only through earlier tokens that exited before a token.
    /// Expected logits and <see cref="PerStepStatistics"/> need every loop and run full depth whatever this says.
    /// </summary>
    public bool FullDepth { get; init; }

    /// <summary>Count, per loop step, the scored tokens whose argmax at that step is correct (<see cref="ScoredDocument.StepCorrectCounts"/>); runs full depth plus one LM-head pass per loop.</summary>
    public bool PerStepStatistics { get; init; }

    /// <summary>Windows per forward pass (at least 1). Default <see cref="Defaults.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = Defaults.BatchSize;

    /// <summary>Longest window C (at least 2); capped by the model's <c>max_position_embeddings</c>. Default <see cref="Defaults.ContextLength"/>.</summary>
    public int ContextLength { get; init; } = Defaults.ContextLength;
}
