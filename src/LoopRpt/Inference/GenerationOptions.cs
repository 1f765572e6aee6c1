using LoopRpt.Model;

namespace LoopRpt.Inference;

/// <summary>Options of <see cref="LoopedGenerator"/>.</summary>
public sealed class GenerationOptions
{
    /// <summary>Defaults, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Tokens to generate at most.</summary>
        public const int MaxNewTokens = 64;

        /// <summary>Softmax temperature; 0 means greedy.</summary>
        public const double Temperature = 1.0;

        /// <summary>Nucleus mass; 1 disables top-p.</summary>
        public const double TopP = 1.0;

        /// <summary>Seed of the sampler's local generator.</summary>
        public const ulong Seed = 0;

        /// <summary>Rows decoded together at most.</summary>
        public const int BatchSize = 8;

        /// <summary>Key/value rule at decode time: the exact one.</summary>
        public const KvCacheMode KvCache = KvCacheMode.PerLoop;
    }

    /// <summary>Tokens to generate at most (at least 1).</summary>
    public int MaxNewTokens { get; init; } = Defaults.MaxNewTokens;

    /// <summary>Softmax temperature (&gt;= 0); 0 means greedy argmax.</summary>
    public double Temperature { get; init; } = Defaults.Temperature;

    /// <summary>Top-p (nucleus) mass in (0, 1]: sample among the most likely tokens whose mass first reaches p.</summary>
    public double TopP { get; init; } = Defaults.TopP;

    /// <summary>Tokens that end a sequence; the stop token is kept as the last generated token.</summary>
    public IReadOnlyCollection<long> StopTokens { get; init; } = [];

    /// <summary>
    /// Per-token exit rule, as for <see cref="AdaptiveExitScorerOptions.Exit"/>: <see cref="ExitMode.Q"/> for adaptive depth,
    /// null for the config's <c>early_exit_threshold</c> (else full depth). Applies to the prompt (prefill) too.
    /// </summary>
    public ExitMode? Exit { get; init; }

    /// <summary>
    /// Seed of the local sampling generators (the global RNG is never used): prompt i of a batch samples from its own
    /// generator seeded with Seed + i, so a prompt's tokens do not depend on the prompts decoded beside it.
    /// </summary>
    public ulong Seed { get; init; } = Defaults.Seed;

    /// <summary>
    /// Null (default): no log-probabilities. 0 to <see cref="GenerationRow.MaxTopLogprobs"/>: every sequence's
    /// <see cref="GeneratedSequence.Details"/> gives each token's log-probability at its exit loop and that many most
    /// likely alternatives (<see cref="GenerationRow.TopLogprobs"/>).
    /// </summary>
    public int? TopLogprobs { get; init; }

    /// <summary>
    /// Rows that <see cref="LoopedGenerator.GenerateBatch"/> decodes together at most (at least 1). More prompts wait,
    /// and each starts as soon as a row's sequence ends (continuous batching). The KV cache holds
    /// 2 × layers × loops × rows × (longest prompt + MaxNewTokens) × kv heads × head dim elements.
    /// </summary>
    public int BatchSize { get; init; } = Defaults.BatchSize;

    /// <summary>
    /// Called on the generating thread for every token as soon as it is sampled (streaming): the prompt's index in the
    /// batch, the token id, and the loops run by the step that produced it. Tokens of different prompts interleave.
    /// </summary>
    public Action<int, long, int>? OnToken { get; init; }

    /// <summary>
    /// Asked on the generating thread after every token (after <see cref="OnToken"/>) with the prompt's index: true ends
    /// that sequence now (finish reason <see cref="FinishReason.Stop"/>) and frees its row for the next prompt. Lets
    /// callers sharing one batch stop on their own terms: a stop string, a smaller token budget, a cancelled request.
    /// </summary>
    public Func<int, bool>? StopWhen { get; init; }

    /// <summary>
    /// Which keys/values a token attends to at decode time (default <see cref="KvCacheMode.PerLoop"/>, the exact rule).
    /// </summary>
    public KvCacheMode KvCache { get; init; } = Defaults.KvCache;

    internal void Validate(string paramName)
    {
        if (!Enum.IsDefined(KvCache))
            throw new ArgumentOutOfRangeException(paramName, KvCache, "KvCache must be PerLoop or LastLoop.");
        if (BatchSize < 1)
            throw new ArgumentOutOfRangeException(paramName, BatchSize, "BatchSize must be at least 1.");
        if (MaxNewTokens < 1)
            throw new ArgumentOutOfRangeException(paramName, MaxNewTokens, "MaxNewTokens must be at least 1.");
        CheckTemperature(Temperature, paramName);
        CheckTopP(TopP, paramName);
        ArgumentNullException.ThrowIfNull(StopTokens, paramName);
        if (TopLogprobs is < 0 or > GenerationRow.MaxTopLogprobs)
            throw new ArgumentOutOfRangeException(paramName, TopLogprobs, $"TopLogprobs must lie in [0, {GenerationRow.MaxTopLogprobs}] (or be null for none).");
    }

    /// <summary>
    /// The temperature rule (finite, &gt;= 0; 0 = greedy), for faces that take the setting from their own inputs (a chat
    /// request, a client's defaults) and must refuse it before generation starts.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value breaks the rule (reported against <paramref name="paramName"/>).</exception>
    public static void CheckTemperature(double temperature, string paramName)
    {
        if (!(temperature >= 0) || double.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(paramName, temperature, "Temperature must be a finite number >= 0 (0 = greedy).");
    }

    /// <summary>The top-p rule (in (0, 1]), for faces that take the setting from their own inputs.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value breaks the rule (reported against <paramref name="paramName"/>).</exception>
    public static void CheckTopP(double topP, string paramName)
    {
        if (!(topP > 0 && topP <= 1))
            throw new ArgumentOutOfRangeException(paramName, topP, "TopP must lie in (0, 1].");
    }
}

/// <summary>The key/value cache rule of generation (docs/adaptive-exit.md).</summary>
public enum KvCacheMode
{
    /// <summary>
    /// One slot per (loop, layer): at loop t a token attends to every earlier token's keys/values of loop t (of its exit
    /// loop, when it exited before t). Reproduces adaptive teacher-forced scoring exactly.
    /// </summary>
    PerLoop,

    /// <summary>
    /// One slot per layer, shared by all loops: at every loop a token attends to earlier tokens' keys/values of their
    /// exit loop — Ouro's decode-time KV sharing ("last step" reuse). T times less cache memory, no per-loop copies;
    /// an approximation of <see cref="PerLoop"/> for the loops before an earlier token's exit. The prompt (prefill) is
    /// computed exactly as in PerLoop.
    /// </summary>
    LastLoop,
}

/// <summary>Why a generated sequence ended.</summary>
public enum FinishReason
{
    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> were generated.</summary>
    Length,
    /// <summary>A stop token was generated.</summary>
    Stop,
}

/// <summary>One generated continuation.</summary>
/// <param name="Tokens">Generated token ids (the prompt excluded; a stop token included).</param>
/// <param name="LoopsUsed">Per generated token, the loops (1-indexed exit step) run by the forward step that produced
/// it: for the first token, the last prompt token's exit in the prefill.</param>
/// <param name="FinishReason">Why generation ended.</param>
public sealed record GeneratedSequence(long[] Tokens, int[] LoopsUsed, FinishReason FinishReason)
{
    /// <summary>
    /// Per generated token, its id, exit loop, log-probability and most likely alternatives, when
    /// <see cref="GenerationOptions.TopLogprobs"/> asked for them; otherwise null.
    /// </summary>
    public IReadOnlyList<GeneratedToken>? Details { get; init; }

    /// <summary>Mean loops per generated token.</summary>
    public double MeanLoops => LoopsUsed.Length == 0 ? double.NaN : LoopsUsed.Average();
}
