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
/// Sampling uses a local <see cref="Generator"/> seeded from <see cref="GenerationOptions.Seed"/>; the global RNG is
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
        var rule = ExitRule.From(options.Exit, _lm.Config, nameof(options));
        ValidatePrompts(prompts, options.MaxNewTokens);
        int b = prompts.Count;
        var stop = options.StopTokens.ToHashSet();

        var tokens = Enumerable.Range(0, b).Select(_ => new List<long>()).ToArray();
        var loops = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var stopped = new bool[b];
        using var rng = new Generator(options.Seed);
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();

        // Records a token; true when its sequence is finished (stop token, or MaxNewTokens reached).
        bool Record(int sequence, long token, int loopsUsed)
        {
            tokens[sequence].Add(token);
            loops[sequence].Add(loopsUsed);
            stopped[sequence] = stop.Contains(token);
            options.OnToken?.Invoke(sequence, token, loopsUsed);
            if (!stopped[sequence] && options.StopWhen?.Invoke(sequence) == true) stopped[sequence] = true;
            return stopped[sequence] || tokens[sequence].Count >= options.MaxNewTokens;
        }
        Tensor Sample(Tensor logits) => TokenSampler.Pick(logits, options.Temperature, options.TopP, rng);

        new StaggeredDecoder(_lm).Run(prompts, options.BatchSize, options.MaxNewTokens, rule, options.KvCache, Sample, Record, InspectCache, cancellationToken);
        return Enumerable.Range(0, b)
            .Select(i => new GeneratedSequence(tokens[i].ToArray(), loops[i].ToArray(), stopped[i] ? FinishReason.Stop : FinishReason.Length))
            .ToArray();
    }

    /// <summary>Checks the prompts against the vocabulary and the context length.</summary>
    private void ValidatePrompts(IReadOnlyList<IReadOnlyList<long>> prompts, int maxNewTokens)
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
        if (length + maxNewTokens > _lm.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(prompts), length + maxNewTokens,
                $"Prompt length {length} (the longest) + MaxNewTokens {maxNewTokens} exceeds max_position_embeddings = {_lm.Config.MaxPositionEmbeddings}.");
    }
}
