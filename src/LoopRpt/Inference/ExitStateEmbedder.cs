using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>How <see cref="ExitStateEmbedder"/> turns a sequence's per-token exit states into one vector.</summary>
public enum EmbeddingPooling
{
    /// <summary>Mean of every token's exit state (the default; robust for any tokenizer and prompt shape).</summary>
    Mean,

    /// <summary>The last token's exit state (the state that predicts what follows the text).</summary>
    LastToken,
}

/// <summary>Options of <see cref="ExitStateEmbedder"/>.</summary>
public sealed class ExitStateEmbedderOptions
{
    /// <summary>Defaults, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Sequences per forward pass.</summary>
        public const int BatchSize = 16;

        /// <summary>Pooling over tokens.</summary>
        public const EmbeddingPooling Pooling = EmbeddingPooling.Mean;

        /// <summary>Whether vectors are scaled to unit L2 norm.</summary>
        public const bool Normalize = true;
    }

    /// <summary>
    /// Per-token exit rule, as for <see cref="AdaptiveExitScorerOptions.Exit"/>: <see cref="ExitMode.Q"/> stops each token's
    /// loops once its exit CDF reaches q; null means the config's <c>early_exit_threshold</c>, else full depth.
    /// </summary>
    public ExitMode? Exit { get; init; }

    /// <summary>Sequences per forward pass (at least 1). Default <see cref="Defaults.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = Defaults.BatchSize;

    /// <summary>Pooling over tokens. Default <see cref="EmbeddingPooling.Mean"/>.</summary>
    public EmbeddingPooling Pooling { get; init; } = Defaults.Pooling;

    /// <summary>Scale every vector to unit L2 norm (cosine similarity = dot product). Default true.</summary>
    public bool Normalize { get; init; } = Defaults.Normalize;
}

/// <summary>One pooled embedding.</summary>
/// <param name="Vector">The pooled exit state, hidden_size floats.</param>
/// <param name="TokenCount">Tokens embedded.</param>
/// <param name="LoopsSpent">Loops run over all tokens (each token counts its 1-indexed exit step).</param>
public sealed record PooledEmbedding(float[] Vector, int TokenCount, int LoopsSpent);

/// <summary>
/// Sentence embeddings from a looped model: each token runs its loops with the compute-saving adaptive exit of
/// <see cref="AdaptiveExitScorer"/> (docs/adaptive-exit.md), its <i>exit state</i> is the final-normed hidden state
/// the LM head reads at its exit loop, and a sequence's vector pools those states (mean by default) and is scaled to
/// unit L2 norm. With full depth (q = 1) the exit state of every token is the last loop's state of
/// <see cref="OuroForCausalLM.Forward"/>.
/// </summary>
/// <remarks>
/// Sequences are right-padded into batches of <see cref="ExitStateEmbedderOptions.BatchSize"/>; padding is neither computed
/// nor pooled, so a sequence's vector does not depend on its batch neighbours beyond float rounding. Each batch runs
/// inside its own dispose scope under no_grad. Thread-safe for concurrent callers (the model is only read).
/// </remarks>
public sealed class ExitStateEmbedder
{
    private readonly SequencePass _pass;

    /// <summary>Creates an embedder for <paramref name="lm"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The exit rule cannot save compute (expected logits), a fixed step is
    /// beyond the model's loops, or the batch size is below 1.</exception>
    public ExitStateEmbedder(OuroForCausalLM lm, ExitStateEmbedderOptions? options = null)
    {
        Options = options ?? new ExitStateEmbedderOptions();
        if (!Enum.IsDefined(Options.Pooling))
            throw new ArgumentOutOfRangeException(nameof(options), Options.Pooling, "Pooling must be Mean or LastToken.");
        _pass = new SequencePass(lm, Options.Exit, Options.BatchSize, nameof(options));
    }

    /// <summary>The options in use (never mutated).</summary>
    public ExitStateEmbedderOptions Options { get; }

    /// <summary>Length of every vector: the model's hidden size.</summary>
    public int Dimension => _pass.Model.Config.HiddenSize;

    /// <summary>Embeds every sequence, <see cref="ExitStateEmbedderOptions.BatchSize"/> at a time.</summary>
    /// <exception cref="ArgumentException">A sequence is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, or a sequence is longer than
    /// max_position_embeddings.</exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked before every batch).</exception>
    public IReadOnlyList<PooledEmbedding> Embed(IReadOnlyList<IReadOnlyList<long>> sequences, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        Validate(sequences);
        var results = new List<PooledEmbedding>(sequences.Count);
        foreach (var batch in sequences.Chunk(Options.BatchSize))
        {
            cancellationToken.ThrowIfCancellationRequested();
            results.AddRange(EmbedBatch(batch));
        }
        return results;
    }

    private PooledEmbedding[] EmbedBatch(IReadOnlyList<long>[] batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = _pass.Model.Device;
        var (hostIds, hostLengths) = AdaptiveExitScorer.Pad(batch);
        long b = hostIds.shape[0], s = hostIds.shape[1];
        var ids = hostIds.to(device);                                                     // (B, S)
        var lengths = hostLengths.to(device);                                             // (B)
        var positions = HeldScalars.Arange(0, s, ScalarType.Int64, device).unsqueeze(0);   // (1, S)
        var real = positions < lengths.unsqueeze(1);                                      // (B, S)
        var valid = batch.All(x => x.Count == s) ? null : real;

        var run = _pass.Run(ids, valid);

        var states = run.States.view(b, s, -1).to_type(ScalarType.Float32);               // (B, S, H) exit states
        Tensor pooled;                                                                    // (B, H)
        if (Options.Pooling == EmbeddingPooling.Mean)
        {
            var weights = real.to_type(ScalarType.Float32).unsqueeze(-1);                 // (B, S, 1)
            pooled = (states * weights).sum(1) / lengths.to_type(ScalarType.Float32).unsqueeze(1);
        }
        else
        {
            var last = lengths.Plus(-1L).view(b, 1, 1).expand(b, 1, states.shape[2]);         // (B, 1, H)
            pooled = states.gather(1, last).squeeze(1);
        }
        if (Options.Normalize) pooled = pooled / pooled.norm(1, keepdim: true).ClampMin(1e-12);
        var loops = run.ExitSteps.view(b, s).Plus(1L).ClampMin(0).sum(1);                  // (B) padding has exit -1
        var vectors = pooled.cpu().contiguous().data<float>().ToArray();
        var spent = loops.cpu().data<long>().ToArray();
        int h = (int)pooled.shape[1];
        return Enumerable.Range(0, (int)b)
            .Select(i => new PooledEmbedding(vectors.AsSpan(i * h, h).ToArray(), batch[i].Count, (int)spent[i]))
            .ToArray();
    }

    private void Validate(IReadOnlyList<IReadOnlyList<long>> sequences)
    {
        var config = _pass.Model.Config;
        for (int i = 0; i < sequences.Count; i++)
        {
            var x = sequences[i];
            if (x is null || x.Count == 0)
                throw new ArgumentException($"Sequence {i} is empty; an embedding needs at least one token.", nameof(sequences));
            if (x.Count > config.MaxPositionEmbeddings)
                throw new ArgumentOutOfRangeException(nameof(sequences), x.Count,
                    $"Sequence {i} has {x.Count} tokens; the model reads at most max_position_embeddings = {config.MaxPositionEmbeddings}.");
            foreach (var id in x)
                if (id < 0 || id >= config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(sequences), id, $"Token id {id} of sequence {i} is outside the vocabulary [0, {config.VocabSize}).");
        }
    }
}
