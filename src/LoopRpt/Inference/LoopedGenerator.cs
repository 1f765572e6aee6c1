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
    private readonly AdaptiveLoopRunner _runner;

    /// <summary>Creates a generator for <paramref name="lm"/>.</summary>
    public LoopedGenerator(OuroForCausalLM lm)
    {
        _lm = lm ?? throw new ArgumentNullException(nameof(lm));
        _runner = new AdaptiveLoopRunner(lm);
    }

    /// <summary>Called with the cache after a batch is generated, before it is disposed (tests).</summary>
    internal Action<LoopKvCache>? InspectCache { get; init; }

    /// <summary>Continues one prompt.</summary>
    /// <exception cref="ArgumentException">The prompt is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, the sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    public GeneratedSequence Generate(IReadOnlyList<long> prompt, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return GenerateBatch([prompt], options)[0];
    }

    /// <summary>
    /// Continues several prompts in one batch. Prompts may differ in length: they are prefilled right-padded, and in
    /// decoding every row advances through its own loops and positions (<see cref="StaggeredDecoder"/>), so each row's
    /// result is the one it would get alone.
    /// </summary>
    /// <exception cref="ArgumentException">No prompts, or an empty prompt.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary, a sequence would exceed
    /// max_position_embeddings, or an option is out of range.</exception>
    public IReadOnlyList<GeneratedSequence> GenerateBatch(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options ??= new GenerationOptions();
        options.Validate(nameof(options));
        var rule = ExitRule.From(options.Exit, _lm.Config, nameof(options));
        int longest = ValidatePrompts(prompts, options.MaxNewTokens);
        int b = prompts.Count;
        var stop = options.StopTokens.ToHashSet();

        var tokens = Enumerable.Range(0, b).Select(_ => new List<long>()).ToArray();
        var loops = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var stopped = new bool[b];
        var device = _lm.Device;
        using var rng = new Generator(options.Seed);
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        using var cache = new LoopKvCache(b, longest + options.MaxNewTokens, _lm.Config.TotalUtSteps, _lm.Config.NumHiddenLayers,
            _lm.Config.NumKeyValueHeads, _lm.Config.HeadDim, rolling: false, device, _lm.DType);

        // Records a token; true when its row is finished (stop token, or MaxNewTokens reached).
        bool Record(int row, long token, int loopsUsed)
        {
            tokens[row].Add(token);
            loops[row].Add(loopsUsed);
            stopped[row] = stop.Contains(token);
            return stopped[row] || tokens[row].Count >= options.MaxNewTokens;
        }
        long[] Sample(Tensor logits) => TokenSampler.Sample(logits, options.Temperature, options.TopP, rng);

        // Prefill: every prompt in one right-padded chunk, with the same compute-saving pass as scoring.
        var start = new List<(int BatchRow, long Position, long Token)>();
        using (var scope = NewDisposeScope())
        {
            var padded = new long[b * longest];
            var real = new bool[b * longest];
            for (int i = 0; i < b; i++)
                for (int p = 0; p < prompts[i].Count; p++)
                {
                    padded[i * longest + p] = prompts[i][p];
                    real[i * longest + p] = true;
                }
            var ids = tensor(padded, [b, longest], device: device);
            var valid = prompts.All(p => p.Count == longest) ? null : tensor(real, [b, longest], device: device);
            var run = _runner.Run(ids, valid, cache, rule);
            var last = tensor(Enumerable.Range(0, b).Select(i => (long)(i * longest + prompts[i].Count - 1)).ToArray(), [b], device: device);
            var exits = run.ExitSteps.index_select(0, last).cpu().data<long>().ToArray();
            var first = Sample(_lm.Logits(run.States.index_select(0, last)).to_type(ScalarType.Float32).cpu());
            for (int i = 0; i < b; i++)
                if (!Record(i, first[i], (int)exits[i] + 1))
                    start.Add((i, prompts[i].Count, first[i]));
        }

        new StaggeredDecoder(_lm).Decode(cache, rule, start, Sample, Record);
        InspectCache?.Invoke(cache);
        return Enumerable.Range(0, b)
            .Select(i => new GeneratedSequence(tokens[i].ToArray(), loops[i].ToArray(), stopped[i] ? FinishReason.Stop : FinishReason.Length))
            .ToArray();
    }

    /// <summary>Checks the prompts; returns the longest prompt's length.</summary>
    private int ValidatePrompts(IReadOnlyList<IReadOnlyList<long>> prompts, int maxNewTokens)
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
        return length;
    }
}
