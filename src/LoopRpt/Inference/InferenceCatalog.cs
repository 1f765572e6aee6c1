using LoopRpt.Model;

namespace LoopRpt.Inference;

/// <summary>
/// Entry points for compute-saving inference on a looped model (docs/adaptive-exit.md): each with a simple overload
/// (the common knobs) and one taking the component's options.
/// </summary>
public static class InferenceCatalog
{
    /// <summary>A teacher-forced scorer that stops computing each token once its exit CDF reaches <paramref name="q"/>.</summary>
    /// <param name="lm">The model.</param>
    /// <param name="q">Q-exit threshold in [0, 1]; 1 means full depth.</param>
    /// <param name="batchSize">Sequences per batch in <see cref="AdaptiveExitScorer.Evaluate"/>.</param>
    public static AdaptiveExitScorer AdaptiveScorer(this OuroForCausalLM lm, double q, int batchSize = AdaptiveExitScorerOptions.Defaults.BatchSize)
        => new(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(q), BatchSize = batchSize });

    /// <summary>A teacher-forced adaptive-exit scorer with full options.</summary>
    public static AdaptiveExitScorer AdaptiveScorer(this OuroForCausalLM lm, AdaptiveExitScorerOptions options)
        => new(lm, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>Continues <paramref name="prompt"/> with KV-cached generation and per-token adaptive exit.</summary>
    /// <param name="lm">The model.</param>
    /// <param name="prompt">Prompt token ids.</param>
    /// <param name="maxNewTokens">Tokens to generate at most.</param>
    /// <param name="q">Q-exit threshold in [0, 1]; 1 means full depth.</param>
    /// <param name="temperature">Softmax temperature; 0 means greedy.</param>
    /// <param name="seed">Seed of the local sampling generator.</param>
    public static GeneratedSequence Generate(this OuroForCausalLM lm, IReadOnlyList<long> prompt,
        int maxNewTokens = GenerationOptions.Defaults.MaxNewTokens, double q = 1.0,
        double temperature = GenerationOptions.Defaults.Temperature, ulong seed = GenerationOptions.Defaults.Seed)
        => new LoopedGenerator(lm).Generate(prompt,
            new GenerationOptions { MaxNewTokens = maxNewTokens, Exit = ExitMode.Q(q), Temperature = temperature, Seed = seed });

    /// <summary>Continues <paramref name="prompt"/> with full generation options.</summary>
    public static GeneratedSequence Generate(this OuroForCausalLM lm, IReadOnlyList<long> prompt, GenerationOptions options)
        => new LoopedGenerator(lm).Generate(prompt, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>
    /// Continues every prompt, <see cref="GenerationOptions.BatchSize"/> rows at a time with staggered decoding and
    /// continuous batching; each result is the one its prompt gets alone.
    /// </summary>
    public static IReadOnlyList<GeneratedSequence> GenerateBatch(this OuroForCausalLM lm, IReadOnlyList<IReadOnlyList<long>> prompts,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
        => new LoopedGenerator(lm).GenerateBatch(prompts, options, cancellationToken);
}
