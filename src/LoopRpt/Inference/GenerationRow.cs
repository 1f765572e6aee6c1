using LoopRpt.Model;

namespace LoopRpt.Inference;

/// <summary>
/// One sequence to generate with <see cref="LoopedGenerator.Serve"/>: its prompt, token budget, exit rule and its own
/// sampling (temperature, top-p and a generator seeded from <see cref="Seed"/>), so its tokens do not depend on the
/// other sequences decoded beside it.
/// </summary>
public sealed class GenerationRow
{
    /// <summary>The most alternatives <see cref="TopLogprobs"/> may ask for (OpenAI's limit).</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>The prompt's token ids (at least one).</summary>
    public required IReadOnlyList<long> Prompt { get; init; }

    /// <summary>Tokens to generate at most (at least 1).</summary>
    public int MaxNewTokens { get; init; } = GenerationOptions.Defaults.MaxNewTokens;

    /// <summary>Softmax temperature (&gt;= 0); 0 means greedy argmax.</summary>
    public double Temperature { get; init; } = GenerationOptions.Defaults.Temperature;

    /// <summary>Top-p (nucleus) mass in (0, 1].</summary>
    public double TopP { get; init; } = GenerationOptions.Defaults.TopP;

    /// <summary>Seed of this row's own sampling generator.</summary>
    public ulong Seed { get; init; } = GenerationOptions.Defaults.Seed;

    /// <summary>Per-token exit rule (null: the config's <c>early_exit_threshold</c>, else full depth), as <see cref="GenerationOptions.Exit"/>.</summary>
    public ExitMode? Exit { get; init; }

    /// <summary>
    /// Null: no log-probabilities. 0 to <see cref="MaxTopLogprobs"/>: every <see cref="GeneratedToken"/> carries the
    /// token's log-probability and that many most likely alternatives, from the model's next-token distribution at the
    /// token's exit loop (log-softmax of the raw logits, before temperature and top-p).
    /// </summary>
    public int? TopLogprobs { get; init; }

    /// <summary>Receives every token as soon as it is chosen, on the generating thread; returns true to end the sequence now.</summary>
    public required Func<GeneratedToken, bool> OnToken { get; init; }

    /// <summary>Checks the settings (not the prompt's ids, which need the model).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    /// <exception cref="ArgumentException">The prompt is empty.</exception>
    public void Validate(string paramName)
    {
        if (Prompt is null || Prompt.Count == 0) throw new ArgumentException("The prompt must hold at least one token.", paramName);
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(paramName, MaxNewTokens, "MaxNewTokens must be at least 1.");
        GenerationOptions.CheckTemperature(Temperature, paramName);
        GenerationOptions.CheckTopP(TopP, paramName);
        if (TopLogprobs is < 0 or > MaxTopLogprobs)
            throw new ArgumentOutOfRangeException(paramName, TopLogprobs, $"TopLogprobs must lie in [0, {MaxTopLogprobs}] (or be null for none).");
        ArgumentNullException.ThrowIfNull(OnToken, paramName);
    }
}

/// <summary>A token id with its log-probability.</summary>
/// <param name="Token">The token id.</param>
/// <param name="LogProb">Its natural-log probability.</param>
public readonly record struct TokenLogProb(long Token, float LogProb);

/// <summary>One generated token as the decoder chose it.</summary>
/// <param name="Id">The token id.</param>
/// <param name="Loops">Loops run by the step that produced it (its exit loop, 1-indexed).</param>
/// <param name="LogProb">Its log-probability at that exit loop (NaN when log-probabilities were not asked for).</param>
/// <param name="Top">The most likely tokens there, most likely first (empty when none were asked for).</param>
public sealed record GeneratedToken(long Id, int Loops, float LogProb, IReadOnlyList<TokenLogProb> Top);
