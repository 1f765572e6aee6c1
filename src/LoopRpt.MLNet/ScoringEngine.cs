using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.MLNet;

/// <summary>Scores of one row (one token sequence). Arrays are per predicted token: positions 1..n-1 of the row.</summary>
internal sealed class RowScore
{
    public RowScore(float logLikelihood, float[] tokenLogProbabilities, float[] exitSteps, float[] tokenEntropies, float[] correct, float[] stepCorrectCounts, int loops)
    {
        LogLikelihood = logLikelihood;
        TokenLogProbabilities = tokenLogProbabilities;
        ExitSteps = exitSteps;
        TokenEntropies = tokenEntropies;
        Correct = correct;
        StepCorrectCounts = stepCorrectCounts;
        Loops = loops;
    }

    public float LogLikelihood { get; }
    public float[] TokenLogProbabilities { get; }
    /// <summary>1-indexed exit step per token (fractional for expected-logits mode).</summary>
    public float[] ExitSteps { get; }
    /// <summary>Entropy (nats) of the next-token distribution read out at the exit.</summary>
    public float[] TokenEntropies { get; }
    /// <summary>1 where the argmax at the exit equals the next token, else 0.</summary>
    public float[] Correct { get; }
    /// <summary>Per loop step t, how many of this row's tokens the argmax at step t predicts correctly (empty if disabled).</summary>
    public float[] StepCorrectCounts { get; }
    public int Loops { get; }
    public int TokenCount => TokenLogProbabilities.Length;

    /// <summary>Mean 1-indexed exit step; NaN for a row with no predicted token.</summary>
    public float MeanExitStep => TokenCount == 0 ? float.NaN : (float)ExitSteps.Average(x => (double)x);

    /// <summary>exp(-LogLikelihood / tokens); NaN for a row with no predicted token.</summary>
    public float Perplexity => TokenCount == 0 ? float.NaN : (float)Math.Exp(-(double)LogLikelihood / TokenCount);

    /// <summary>Loop compute spent relative to full depth: mean exit step / loops; 0 for a row with no predicted token.</summary>
    public float ComputeFraction => TokenCount == 0 ? 0f : MeanExitStep / Loops;
}

/// <summary>
/// The scoring computation behind every LoopRpt ML.NET scoring surface (the batched IDataView, the prediction engine,
/// a model reloaded by ml.Model.Load; the Pareto sweep evaluates the same windows, <see cref="Batches"/>).
/// <para><b>Two compute paths.</b> With one exit per token and no per-step statistics, chunks run on the adaptive-exit
/// path (<see cref="AdaptiveChunk"/>, src/LoopRpt/Inference): tokens stop looping at their exit, so compute is really
/// saved. Per-step statistics (<see cref="PerStepStatistics"/>) and expected logits need every
/// loop and run the full-depth <c>lm.Forward</c>, selecting with <see cref="ExitMode"/> afterwards. The two agree exactly
/// at full depth and for fixed steps; under Q-exit the adaptive path attends to exited tokens' frozen keys/values
/// (the documented approximation in docs/adaptive-exit.md).</para>
/// <para>Windowing: a row of n tokens predicts tokens 1..n-1. Rows longer than the context length C are split into
/// windows of C tokens overlapping by one (the last input of one window is the first of the next), each starting with
/// an empty context. Windows are padded to P = min(C, n rounded up to a multiple of <see cref="PadMultiple"/>) and only
/// windows of equal P share a forward pass, so a row's scores depend on its tokens alone, not on its batch neighbours
/// (CPU results are bitwise identical for batch size 1 and for batches, which the persistence tests check).</para>
/// </summary>
internal sealed class ScoringEngine : IDisposable
{
    public const int PadMultiple = 32;
    private readonly object _gate = new();
    private bool _disposed;

    public ScoringEngine(OuroForCausalLM model, ExitMode exitMode, int batchSize, int contextLength, bool perStepStatistics)
    {
        Model = model;
        ExitMode = exitMode;
        BatchSize = batchSize;
        ContextLength = contextLength;
        PerStepStatistics = perStepStatistics;
        model.eval();
    }

    public OuroForCausalLM Model { get; }
    public ExitMode ExitMode { get; }
    public int BatchSize { get; }
    public int ContextLength { get; }
    public bool PerStepStatistics { get; }
    public int Loops => Model.Config.TotalUtSteps;
    public bool IsDisposed => _disposed;

    /// <summary>Scores rows (null or fewer than two tokens: no predicted token, see the transformer remarks). Thread-safe (serialized).</summary>
    public RowScore[] Score(IReadOnlyList<int[]?> rows)
    {
        var results = new RowScore[rows.Count];
        var acc = new Accumulator[rows.Count];
        var units = Units(rows, acc);
        Exclusive(() =>
        {
            foreach (var group in units.GroupBy(u => u.Padded))
                foreach (var chunk in group.Chunk(BatchSize))
                    ForwardChunk(chunk, group.Key, acc);
            return 0;
        });
        for (int i = 0; i < rows.Count; i++) results[i] = acc[i]?.ToScore(Loops) ?? EmptyScore();
        return results;
    }

    /// <summary>
    /// The batches <see cref="Score"/> runs for <paramref name="rows"/>: windows grouped by padded length, in batches of
    /// <see cref="BatchSize"/>, padding targets <see cref="Data.TokenBatch.IgnoreIndex"/> (what the Pareto sweep evaluates).
    /// </summary>
    public IReadOnlyList<Data.TokenBatch> Batches(IReadOnlyList<int[]?> rows)
        => Units(rows, null).GroupBy(u => u.Padded).SelectMany(g => g.Chunk(BatchSize).Select(c => ToBatch(c, g.Key))).ToList();

    /// <summary>Runs <paramref name="work"/> on the model with the engine's lock held (the engine serializes its callers).</summary>
    public T Exclusive<T>(Func<T> work)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return work();
        }
    }

    private RowScore EmptyScore() => new(0, [], [], [], [], PerStepStatistics ? new float[Loops] : [], Loops);

    private readonly record struct Unit(int Row, int[] Tokens, int Start, int Length, int Padded);

    /// <summary>The windows of every row with a predicted token (checking token ids); <paramref name="acc"/> gets a fresh accumulator per such row.</summary>
    private List<Unit> Units(IReadOnlyList<int[]?> rows, Accumulator[]? acc)
    {
        int vocab = Model.Config.VocabSize;
        var units = new List<Unit>();
        for (int r = 0; r < rows.Count; r++)
        {
            var tokens = rows[r];
            if (tokens is null || tokens.Length < 2) continue;
            foreach (var id in tokens)
                if ((uint)id >= (uint)vocab)
                    throw new InvalidOperationException($"Token id {id} is outside the model's vocabulary [0, {vocab}); was the data tokenized with the tokenizer this model was trained with?");
            if (acc is not null) acc[r] = new Accumulator(tokens.Length - 1, Loops, PerStepStatistics);
            for (int start = 0; start < tokens.Length - 1; start += ContextLength - 1)
            {
                int len = Math.Min(ContextLength, tokens.Length - start);
                int padded = Math.Min(ContextLength, (len + PadMultiple - 1) / PadMultiple * PadMultiple);
                units.Add(new Unit(r, tokens, start, len, padded));
            }
        }
        return units;
    }

    /// <summary>A chunk of windows as a (B, P) batch: inputs padded with 0, targets the next tokens, -1 past each window.</summary>
    private static Data.TokenBatch ToBatch(Unit[] chunk, int p)
    {
        int b = chunk.Length;
        var ids = new long[b * p];
        var tg = new long[b * p];
        Array.Fill(tg, Data.TokenBatch.IgnoreIndex);
        for (int i = 0; i < b; i++)
        {
            var u = chunk[i];
            for (int j = 0; j < u.Length; j++) ids[i * p + j] = u.Tokens[u.Start + j];
            for (int j = 0; j + 1 < u.Length; j++) tg[i * p + j] = u.Tokens[u.Start + j + 1];
        }
        return new Data.TokenBatch(ids, tg, b, p);
    }

    /// <summary>
    /// True when a chunk can run on the adaptive-exit path that really skips loops (src/LoopRpt/Inference): a single
    /// exit per token (not expected logits) and no per-step statistics, which need every loop.
    /// </summary>
    private bool UsesAdaptivePath => !PerStepStatistics && ExitMode.Kind != ExitKind.ExpectedLogits;

    private void ForwardChunk(Unit[] chunk, int p, Accumulator[] acc)
    {
        if (UsesAdaptivePath)
        {
            AdaptiveChunk(chunk, p, acc);
            return;
        }
        int b = chunk.Length, T = Loops;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (inputs, targets) = ToBatch(chunk, p).ToTensors(Model.Device);           // (B, P) each
        var output = Model.Forward(inputs);                                           // the loops run batched
        var probs = output.ExitProbabilities();                                       // (B, P, T)
        var exitStep = ExitMode.Kind == ExitKind.ExpectedLogits
            ? ExitDistribution.ExpectedExitStep(probs)
            : ExitMode.Steps(probs).to_type(ScalarType.Float32) + 1;                  // (B, P), 1-indexed
        var hExit = Host(exitStep);

        // The LM head runs one row at a time: (1, P, V) logits instead of (B, P, V) keeps memory bounded for large vocabularies.
        for (int i = 0; i < b; i++)
        {
            var u = chunk[i];
            var a = acc[u.Row];
            float[] hGold, hCorrect, hEntropy;
            float[]? hStep = null;
            using (var rowScope = NewDisposeScope())
            {
                var row = new LoopOutput(output.Hidden.Select(h => h.narrow(0, i, 1)).ToList(), output.GateLogits.narrow(0, i, 1));
                var rowTargets = targets.narrow(0, i, 1);                             // (1, P)
                var logits = ExitMode.Logits(Model, row).to_type(ScalarType.Float32);  // (1, P, V)
                var logp = F.log_softmax(logits, -1);
                hGold = Host(logp.gather(-1, rowTargets.clamp_min(0).unsqueeze(-1)).squeeze(-1));          // (1, P)
                hCorrect = Host((logits.argmax(-1) == rowTargets).to_type(ScalarType.Float32));            // (1, P)
                hEntropy = Host(-(logp.exp() * logp).sum(-1));                                              // (1, P)
                if (a.HasSteps)
                    hStep = Host(stack(row.Hidden.Select(h => (Model.Logits(h).argmax(-1) == rowTargets).to_type(ScalarType.Float32)).ToArray(), -1));   // (1, P, T)
            }
            CheckFinite(hGold, hEntropy, hExit, i * p, u.Length - 1);
            for (int j = 0; j + 1 < u.Length; j++)
            {
                int k = u.Start + j;               // predicted token k+1 of the row, stored at k
                a.LogProbs[k] = hGold[j];
                a.Correct[k] = hCorrect[j];
                a.Entropies[k] = hEntropy[j];
                a.ExitSteps[k] = hExit[i * p + j];
                if (hStep is not null && a.StepCorrect is not null) Array.Copy(hStep, j * T, a.StepCorrect, k * T, T);
            }
        }
    }

    /// <summary>
    /// The compute-saving path: tokens stop looping once their exit CDF reaches q (docs/adaptive-exit.md), padding is
    /// never computed, and the LM head runs once per token on its exit state, one row at a time.
    /// </summary>
    private void AdaptiveChunk(Unit[] chunk, int p, Accumulator[] acc)
    {
        int b = chunk.Length;
        var ids = new long[b * p];
        var lengths = new long[b];
        for (int i = 0; i < b; i++)
        {
            var u = chunk[i];
            lengths[i] = u.Length;
            for (int j = 0; j < u.Length; j++) ids[i * p + j] = u.Tokens[u.Start + j];
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = Model.Device;
        var config = Model.Config;
        var inputs = tensor(ids, [b, p]).to(device);                                                  // (B, P)
        var valid = lengths.All(l => l == p) ? null : arange(p, device: device).unsqueeze(0) < tensor(lengths).to(device).unsqueeze(1); // (B, P)
        _runner ??= new Inference.AdaptiveLoopRunner(Model);
        var rule = Inference.ExitRule.From(ExitMode, config, nameof(ExitMode));
        Inference.ChunkResult run;
        using (var cache = new Inference.LoopKvCache(b, p, config.TotalUtSteps, config.NumHiddenLayers, config.NumKeyValueHeads, config.HeadDim,
                   rolling: true, device, Model.ComputeType))
            run = _runner.Run(inputs, valid, cache, rule);
        var states = run.States.view(b, p, -1);                                                       // (B, P, H) exit states
        var hExit = Host(run.ExitSteps.view(b, p).to_type(ScalarType.Float32) + 1);                    // 1-indexed
        for (int i = 0; i < b; i++)
        {
            var u = chunk[i];
            var a = acc[u.Row];
            float[] hGold, hCorrect, hEntropy;
            using (NewDisposeScope())
            {
                var rowTargets = tensor(Enumerable.Range(0, p).Select(j => j + 1 < u.Length ? (long)u.Tokens[u.Start + j + 1] : 0L).ToArray(), [1, p]).to(device);
                var logits = Model.Logits(states.narrow(0, i, 1)).to_type(ScalarType.Float32);         // (1, P, V)
                var logp = F.log_softmax(logits, -1);
                hGold = Host(logp.gather(-1, rowTargets.unsqueeze(-1)).squeeze(-1));
                hCorrect = Host((logits.argmax(-1) == rowTargets).to_type(ScalarType.Float32));
                hEntropy = Host(-(logp.exp() * logp).sum(-1));
            }
            CheckFinite(hGold, hEntropy, hExit, i * p, u.Length - 1);
            for (int j = 0; j + 1 < u.Length; j++)
            {
                int k = u.Start + j;
                a.LogProbs[k] = hGold[j];
                a.Correct[k] = hCorrect[j];
                a.Entropies[k] = hEntropy[j];
                a.ExitSteps[k] = hExit[i * p + j];
            }
        }
    }

    private Inference.AdaptiveLoopRunner? _runner;

    /// <summary>
    /// Refuses a window whose scores (already on the host) are NaN/Inf, e.g. a model with NaN weights: a
    /// <see cref="NotFiniteNumberException"/> naming the non-finite weights rather than NaN columns downstream.
    /// </summary>
    private void CheckFinite(float[] gold, float[] entropy, float[] exit, int exitOffset, int n)
    {
        for (int j = 0; j < n; j++)
            if (!float.IsFinite(gold[j]) || !float.IsFinite(entropy[j]) || !float.IsFinite(exit[exitOffset + j]))
                throw NonFiniteCheck.Outputs(Model, "scores (log-probabilities, entropies or exit steps)");
    }

    private static float[] Host(Tensor t) => t.to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    private sealed class Accumulator
    {
        public Accumulator(int tokens, int loops, bool steps)
        {
            LogProbs = new float[tokens];
            Correct = new float[tokens];
            Entropies = new float[tokens];
            ExitSteps = new float[tokens];
            StepCorrect = steps ? new float[tokens * loops] : null;
        }

        public float[] LogProbs { get; }
        public float[] Correct { get; }
        public float[] Entropies { get; }
        public float[] ExitSteps { get; }
        public float[]? StepCorrect { get; }
        public bool HasSteps => StepCorrect is not null;

        public RowScore ToScore(int loops)
        {
            double ll = 0;
            foreach (var x in LogProbs) ll += x;     // summed in double, in token order: deterministic
            var counts = Array.Empty<float>();
            if (StepCorrect is not null)
            {
                counts = new float[loops];
                for (int k = 0; k < LogProbs.Length; k++)
                    for (int t = 0; t < loops; t++) counts[t] += StepCorrect[k * loops + t];
            }
            return new RowScore((float)ll, LogProbs, ExitSteps, Entropies, Correct, counts, loops);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Model.Dispose();
        }
    }
}
