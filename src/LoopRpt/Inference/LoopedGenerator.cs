using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// KV-cached autoregressive generation with per-token adaptive exit (docs/adaptive-exit.md). The cache has one slot
/// per (loop t, layer l). The prompt is prefilled with the same compute-saving pass as
/// <see cref="AdaptiveExitScorer"/>; then each new token runs its loops until its exit CDF reaches q, attending at loop
/// t to every earlier token's slot (t, l). A token that exits after loop e fills its slots of later loops with the
/// keys/values of loop e (the "last available loop" rule), so later tokens that run deeper still see it. Generation
/// therefore reproduces adaptive teacher-forced scoring exactly in exact arithmetic.
/// </summary>
/// <remarks>
/// Sampling uses local generators, one per sequence: prompt i of a batch draws from its own generator seeded with
/// <see cref="GenerationOptions.Seed"/> + i, so its tokens are the ones it gets alone with that seed; the global RNG is
/// never touched. In a batch, prompts may differ in length and rows decode independently (<see cref="StaggeredDecoder"/>):
/// a row whose token exits early starts its next token while other rows are still looping, and a row that stops is no
/// longer computed.
/// </remarks>
public sealed class LoopedGenerator
{
    private readonly OuroForCausalLM _lm;

    /// <summary>Creates a generator for <paramref name="lm"/>.</summary>
    public LoopedGenerator(OuroForCausalLM lm)
    {
        _lm = lm ?? throw new ArgumentNullException(nameof(lm));
    }

    /// <summary>Called with the cache after a batch is generated, before it is disposed (tests).</summary>
    internal Action<LoopKvCache>? InspectCache { get; init; }

    /// <summary>Continues one prompt.</summary>
    /// <exception cref="ArgumentException">The prompt is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, the sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked once per decoding tick).</exception>
    public GeneratedSequence Generate(IReadOnlyList<long> prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return GenerateBatch([prompt], options, cancellationToken)[0];
    }

    /// <summary>
    /// Continues several prompts, <see cref="GenerationOptions.BatchSize"/> rows at a time. Prompts may differ in
    /// length. Every row advances through its own loops and positions (<see cref="StaggeredDecoder"/>), and a row whose
    /// sequence ends takes the next waiting prompt, so each result is the one its prompt would get alone.
    /// </summary>
    /// <exception cref="ArgumentException">No prompts, or an empty prompt.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, a sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before the first
    /// prefill and once per decoding tick); nothing is returned and every tensor of the call is released.</exception>
    /// <exception cref="NotFiniteNumberException">The next-token logits are not finite (NaN weights, overflow).</exception>
    public IReadOnlyList<GeneratedSequence> GenerateBatch(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options ??= new GenerationOptions();
        options.Validate(nameof(options));
        _ = ExitRule.From(options.Exit, _lm.Config, nameof(options));
        ValidatePrompts(prompts, options.MaxNewTokens);
        int b = prompts.Count;
        var stop = options.StopTokens.ToHashSet();

        var tokens = Enumerable.Range(0, b).Select(_ => new List<GeneratedToken>()).ToArray();
        var stopped = new bool[b];

        // Records a token; true when its sequence is finished early (stop token, or StopWhen).
        bool Record(int sequence, GeneratedToken token)
        {
            tokens[sequence].Add(token);
            stopped[sequence] = stop.Contains(token.Id);
            options.OnToken?.Invoke(sequence, token.Id, token.Loops);
            if (!stopped[sequence] && options.StopWhen?.Invoke(sequence) == true) stopped[sequence] = true;
            return stopped[sequence];
        }
        var rows = prompts.Select((p, i) => new GenerationRow
        {
            Prompt = p, MaxNewTokens = options.MaxNewTokens, Temperature = options.Temperature, TopP = options.TopP,
            Seed = unchecked(options.Seed + (ulong)i), Exit = options.Exit, TopLogprobs = options.TopLogprobs, OnToken = t => Record(i, t),
        }).ToList();
        int next = 0;
        Decode(() => next < b ? rows[next++] : null, Math.Min(options.BatchSize, b), prompts.Max(p => p.Count) + options.MaxNewTokens,
            options.KvCache, cancellationToken);
        return Enumerable.Range(0, b)
            .Select(i => new GeneratedSequence(tokens[i].Select(t => t.Id).ToArray(), tokens[i].Select(t => t.Loops).ToArray(),
                stopped[i] ? FinishReason.Stop : FinishReason.Length) { Details = options.TopLogprobs is null ? null : tokens[i] })
            .ToArray();
    }

    /// <summary>
    /// Continuous batching for a server: generates for every <see cref="GenerationRow"/> that <paramref name="next"/>
    /// hands out, <paramref name="batchSize"/> rows at a time, and returns when it has none waiting and every row has
    /// ended. <paramref name="next"/> is asked (on the generating thread, never expected to block) whenever a row is free:
    /// at the start, when a sequence ends, and before every decoding tick, so a row that becomes available while the batch
    /// decodes starts at the next tick instead of waiting for the batch to end. Each row samples with its own generator
    /// (seeded from <see cref="GenerationRow.Seed"/>), temperature, top-p and exit rule, so its tokens are the ones it
    /// gets alone. The KV cache holds <paramref name="capacity"/> positions per row (default: the model's context,
    /// max_position_embeddings); every row must fit it (prompt + MaxNewTokens).
    /// </summary>
    /// <param name="next">The next waiting row, or null when none is waiting now.</param>
    /// <param name="batchSize">Rows decoded together at most (at least 1).</param>
    /// <param name="kvCache">Key/value rule at decode time, for every row.</param>
    /// <param name="capacity">Positions per row in the KV cache, in [1, max_position_embeddings]; null: the context.</param>
    /// <param name="cancellationToken">Checked once per decoding tick; cancelling ends every row.</param>
    /// <exception cref="ArgumentException">A row is invalid (empty prompt, a token outside the vocabulary, a setting out of
    /// range, prompt + MaxNewTokens beyond the capacity): the call fails, with the rows still decoding.</exception>
    /// <exception cref="NotFiniteNumberException">A row's next-token logits are not finite (the call fails).</exception>
    public void Serve(Func<GenerationRow?> next, int batchSize, KvCacheMode kvCache = KvCacheMode.PerLoop, int? capacity = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(next);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!Enum.IsDefined(kvCache)) throw new ArgumentOutOfRangeException(nameof(kvCache), kvCache, "KvCache must be PerLoop or LastLoop.");
        int context = _lm.Config.MaxPositionEmbeddings;
        if (capacity is < 1 || capacity > context)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"The capacity must lie in [1, {context}] (max_position_embeddings).");
        Decode(next, batchSize, capacity ?? context, kvCache, cancellationToken);
    }

    /// <summary>Runs the staggered decoder over the rows of <paramref name="next"/>, each checked as it is taken.</summary>
    private void Decode(Func<GenerationRow?> next, int batchSize, long capacity, KvCacheMode kvCache, CancellationToken cancellationToken)
    {
        var taken = new List<DecodeSequence>();
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        DecodeSequence? Take()
        {
            if (next() is not { } row) return null;
            row.Validate("row");
            ValidatePrompts([row.Prompt], row.MaxNewTokens, capacity);
            var sequence = new DecodeSequence(row, ExitRule.From(row.Exit, _lm.Config, "row"));
            taken.Add(sequence);
            return sequence;
        }
        try
        {
            new StaggeredDecoder(_lm).Run(Take, batchSize, capacity, kvCache, InspectCache, cancellationToken);
        }
        finally
        {
            foreach (var s in taken) s.Dispose();
        }
    }

    /// <summary>Checks the prompts against the vocabulary and the context length.</summary>
    private void ValidatePrompts(IReadOnlyList<IReadOnlyList<long>> prompts, int maxNewTokens, long? capacity = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("At least one prompt is needed.", nameof(prompts));
        int length = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            var p = prompts[i];
            if (p is null || p.Count == 0)
                throw new ArgumentException($"Prompt {i} is empty; every prompt must hold at least one token.", nameof(prompts));
            length = Math.Max(length, p.Count);
            foreach (var id in p)
                if (id < 0 || id >= _lm.Config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(prompts), id, $"Token id {id} is outside the vocabulary [0, {_lm.Config.VocabSize}).");
        }
        if (length + maxNewTokens > (capacity ?? _lm.Config.MaxPositionEmbeddings))
            throw new ArgumentOutOfRangeException(nameof(prompts), length + maxNewTokens,
                capacity is null
                    ? $"Prompt length {length} (the longest) + MaxNewTokens {maxNewTokens} exceeds max_position_embeddings = {_lm.Config.MaxPositionEmbeddings}."
                    : $"Prompt length {length} + MaxNewTokens {maxNewTokens} exceeds the batch's capacity of {capacity} positions.");
    }
}
