using LoopRpt.Inference;

namespace LoopRpt.AI;

/// <summary>
/// Options of <see cref="LoopRptChatClient"/>: defaults for requests whose <c>ChatOptions</c> leave a setting unset.
/// </summary>
public sealed class LoopRptChatClientOptions
{
    /// <summary>
    /// The chat client's own defaults. The sampling and batching defaults it shares with generation (temperature, top-p,
    /// seed, rows decoded together, key/value rule) are the core's, <see cref="GenerationOptions.Defaults"/>.
    /// </summary>
    public static class Defaults
    {
        /// <summary>Rows the generator decodes together: <see cref="GenerationOptions.Defaults.BatchSize"/>.</summary>
        public const int BatchSize = GenerationOptions.Defaults.BatchSize;
    }

    /// <summary>
    /// Tokens generated at most when a request does not say (at least 1), and never more than the room its prompt leaves
    /// in the model's context. Default null: the room left in the context (context − prompt tokens), as vLLM does.
    /// A request's own <c>ChatOptions.MaxOutputTokens</c> is taken as given and refused when it overruns the context.
    /// </summary>
    public int? MaxOutputTokens { get; set; }

    /// <summary>Temperature when a request does not say (&gt;= 0; 0 = greedy). Default 1.</summary>
    public double Temperature { get; set; } = GenerationOptions.Defaults.Temperature;

    /// <summary>Top-p when a request does not say, in (0, 1]. Default 1.</summary>
    public double TopP { get; set; } = GenerationOptions.Defaults.TopP;

    /// <summary>Seed when a request does not say (&gt;= 0). Default 0: replies are reproducible.</summary>
    public long Seed { get; set; } = (long)GenerationOptions.Defaults.Seed;

    /// <summary>
    /// Exit threshold q in [0, 1] when a request does not set <see cref="LoopRptChatClient.ExitThresholdKey"/>: each
    /// token stops looping once its exit CDF reaches q (1 = full depth). Null (default): the model config's
    /// <c>early_exit_threshold</c>, else full depth.
    /// </summary>
    public double? ExitThreshold { get; set; }

    /// <summary>Prompt format. Default <see cref="ChatTemplateKind.Auto"/> (ChatML for Ouro checkpoints, plain text otherwise).</summary>
    public ChatTemplateKind Template { get; set; } = ChatTemplateKind.Auto;

    /// <summary>Rows the generator decodes together (at least 1); more concurrent requests wait for a free row. Default 8.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>
    /// True (default): a request that arrives while a batch decodes joins it at the next decoding tick (continuous
    /// batching across requests). False: it waits until the batch ends, then starts the next one with every request
    /// waiting by then — the scheduling before continuous batching, kept for comparisons (examples/ServeBenchmark
    /// <c>--no-join</c>).
    /// </summary>
    public bool JoinRunningBatch { get; set; } = true;

    /// <summary>Key/value rule at decode time. Default <see cref="KvCacheMode.PerLoop"/> (exact).</summary>
    public KvCacheMode KvCache { get; set; } = GenerationOptions.Defaults.KvCache;

    /// <summary>A copy (a client keeps its own, so later edits of the caller's options do not leak in).</summary>
    public LoopRptChatClientOptions Clone() => (LoopRptChatClientOptions)MemberwiseClone();

    internal void Validate()
    {
        if (MaxOutputTokens is < 1) throw new ArgumentOutOfRangeException(nameof(MaxOutputTokens), MaxOutputTokens, "MaxOutputTokens must be at least 1.");
        GenerationOptions.CheckTemperature(Temperature, nameof(Temperature));
        GenerationOptions.CheckTopP(TopP, nameof(TopP));
        if (Seed < 0) throw new ArgumentOutOfRangeException(nameof(Seed), Seed, "Seed must be >= 0.");
        if (ExitThreshold is { } q && !(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(ExitThreshold), q, "ExitThreshold must lie in [0, 1].");
        if (!Enum.IsDefined(Template)) throw new ArgumentOutOfRangeException(nameof(Template), Template, "Template must be Auto, ChatMl or Plain.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
        if (!Enum.IsDefined(KvCache)) throw new ArgumentOutOfRangeException(nameof(KvCache), KvCache, "KvCache must be PerLoop or LastLoop.");
    }
}
