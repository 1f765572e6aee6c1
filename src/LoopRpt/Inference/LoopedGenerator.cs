using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// KV-cached autoregressive generation with per-token adaptive exit (docs/adaptive-exit.md). The cache has one slot
/// per (loop t, layer l), index t * L + l. The prompt is prefilled with the same compute-saving pass as
/// <see cref="AdaptiveExitScorer"/>; then each new token runs its loops until its exit CDF reaches q, attending at loop
/// t to every earlier token's slot (t, l). A token that exits after loop e fills its slots of later loops with the
/// keys/values of loop e (the "last available loop" rule), so later tokens that run deeper still see it. Generation
/// therefore reproduces adaptive teacher-forced scoring exactly in exact arithmetic.
/// </summary>
/// <remarks>
/// Sampling uses a local <see cref="Generator"/> seeded from <see cref="GenerationOptions.Seed"/>; the global RNG is
/// never touched. Batched generation needs prompts of equal length (no left padding); a row that stops is no longer
/// computed.
/// </remarks>
public sealed class LoopedGenerator
{
    private readonly OuroForCausalLM _lm;
    private readonly AdaptiveLoopRunner _runner;

    /// <summary>Creates a generator for <paramref name="lm"/>.</summary>
    public LoopedGenerator(OuroForCausalLM lm)
    {
        _lm = lm ?? throw new ArgumentNullException(nameof(lm));
        _runner = new AdaptiveLoopRunner(lm);
    }

    /// <summary>Continues one prompt.</summary>
    /// <exception cref="ArgumentException">The prompt is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, the sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    public GeneratedSequence Generate(IReadOnlyList<long> prompt, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return GenerateBatch([prompt], options)[0];
    }

    /// <summary>Continues several prompts of equal length in one batch.</summary>
    /// <exception cref="ArgumentException">No prompts, an empty prompt, or prompts of different lengths.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, the sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    public IReadOnlyList<GeneratedSequence> GenerateBatch(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options ??= new GenerationOptions();
        options.Validate(nameof(options));
        var rule = ExitRule.From(options.Exit, _lm.Config, nameof(options));
        int length = ValidatePrompts(prompts, options.MaxNewTokens);
        int b = prompts.Count;
        var stop = options.StopTokens.ToHashSet();

        var tokens = Enumerable.Range(0, b).Select(_ => new List<long>()).ToArray();
        var loops = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var finished = new bool[b];
        var device = _lm.Device;
        using var rng = new Generator(options.Seed);
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        using var cache = new LoopKvCache(b, length + options.MaxNewTokens, _lm.Config.TotalUtSteps, _lm.Config.NumHiddenLayers,
            _lm.Config.NumKeyValueHeads, _lm.Config.HeadDim, rolling: false, device, _lm.DType);

        var chunk = tensor(prompts.SelectMany(p => p).ToArray(), [b, length]).to(device);      // prefill: (B, P)
        Tensor? valid = null;
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            var run = _runner.Run(chunk, valid, cache, rule);
            long s = chunk.shape[1];
            var last = arange(b, device: device) * s + (s - 1);                                 // last position of each row
            var logits = _lm.Logits(run.States.index_select(0, last)).to_type(ScalarType.Float32).cpu();  // (B, V)
            var exits = run.ExitSteps.index_select(0, last).cpu().data<long>().ToArray();
            var next = TokenSampler.Sample(logits, options.Temperature, options.TopP, rng);
            for (int i = 0; i < b; i++)
            {
                if (finished[i]) continue;
                tokens[i].Add(next[i]);
                loops[i].Add((int)exits[i] + 1);
                finished[i] = stop.Contains(next[i]);
            }
            if (finished.All(f => f)) break;
            chunk = tensor(next, [b, 1]).to(device).MoveToOuterDisposeScope();                  // decode: (B, 1)
            valid = finished.Any(f => f) ? tensor(finished.Select(f => !f).ToArray(), [b, 1]).to(device).MoveToOuterDisposeScope() : null;
        }
        return Enumerable.Range(0, b)
            .Select(i => new GeneratedSequence(tokens[i].ToArray(), loops[i].ToArray(), finished[i] ? FinishReason.Stop : FinishReason.Length))
            .ToArray();
    }

    private int ValidatePrompts(IReadOnlyList<IReadOnlyList<long>> prompts, int maxNewTokens)
    {
        if (prompts.Count == 0) throw new ArgumentException("At least one prompt is needed.", nameof(prompts));
        int length = prompts[0]?.Count ?? 0;
        if (length == 0) throw new ArgumentException("Prompts must hold at least one token.", nameof(prompts));
        foreach (var p in prompts)
        {
            if (p is null || p.Count != length)
                throw new ArgumentException($"Batched prompts must have equal lengths: expected {length}, got {p?.Count ?? 0}.", nameof(prompts));
            foreach (var id in p)
                if (id < 0 || id >= _lm.Config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(prompts), id, $"Token id {id} is outside the vocabulary [0, {_lm.Config.VocabSize}).");
        }
        if (length + maxNewTokens > _lm.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(prompts), length + maxNewTokens,
                $"Prompt length {length} + MaxNewTokens {maxNewTokens} exceeds max_position_embeddings = {_lm.Config.MaxPositionEmbeddings}.");
        return length;
    }
}
