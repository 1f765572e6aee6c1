using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Threading.Channels;
using LoopRpt.Inference;
using LoopRpt.Tokenization;
using Microsoft.Extensions.AI;

namespace LoopRpt.AI;

/// <summary>
/// An <see cref="IChatClient"/> over LoopRpt's KV-cached generator with per-token adaptive exit (docs/serving.md).
/// </summary>
/// <remarks>
/// | ChatOptions | Mapped to |
/// |---|---|
/// | MaxOutputTokens | tokens generated at most (unset: the room left in the context, at most <see cref="LoopRptChatClientOptions.MaxOutputTokens"/>) |
/// | Temperature | softmax temperature; 0 = greedy |
/// | TopP | nucleus mass in (0, 1] |
/// | StopSequences | strings that end the reply (not included in it) |
/// | Seed | seed of the request's own sampling generator |
/// | AdditionalProperties[<see cref="ExitThresholdKey"/>] | exit threshold q in [0, 1] (a number or a numeric string) |
/// | AdditionalProperties[<see cref="KvCacheKey"/>] | a <see cref="KvCacheMode"/> (or its name) for this request |
/// | AdditionalProperties[<see cref="RawPromptKey"/>] | true: the messages' text is the prompt as is (no chat template) |
/// | AdditionalProperties[<see cref="TopLogprobsKey"/>] | 0 to 20: per-token log-probabilities with that many alternatives (<see cref="LoopRptGeneration.LogProbs"/>) |
/// | AdditionalProperties[<see cref="ChoiceKey"/>] | choice i of n: sampled with seed Seed + i |
/// | Tools, ResponseFormat (JSON) | not supported: <see cref="NotSupportedException"/> |
///
/// The response's <see cref="UsageDetails"/> has input, output and total tokens, and
/// <c>AdditionalCounts[<see cref="LoopsKey"/>]</c>, the loops spent over all generated tokens (a full-depth model spends
/// output tokens × loops). <see cref="ChatResponse.RawRepresentation"/> (and the last streamed update's) is the
/// <see cref="LoopRptGeneration"/> (token ids, loops per token, model version); <c>AdditionalProperties</c> carry
/// <see cref="ModelVersionKey"/>, <see cref="MeanLoopsKey"/> and <see cref="FullDepthLoopsKey"/>, which survive
/// middleware that rebuilds responses (<see cref="LoopRptUsage.From(ChatResponse)"/> reads either). Concurrent callers
/// share batched decoding (<see cref="GenerationScheduler"/>); streaming yields text as tokens are sampled, and
/// cancelling a call ends its row at the next token.
/// </remarks>
public sealed class LoopRptChatClient : IChatClient
{
    /// <summary>The <c>ChatOptions.AdditionalProperties</c> key (and OpenAI request field) for the exit threshold q.</summary>
    public const string ExitThresholdKey = "exit_threshold";

    /// <summary>
    /// The <c>ChatOptions.AdditionalProperties</c> key of the request's key/value rule: a <see cref="KvCacheMode"/> or
    /// its name; unset, <see cref="LoopRptChatClientOptions.KvCache"/>.
    /// </summary>
    public const string KvCacheKey = "looprpt.kv_cache";

    /// <summary>
    /// The <c>ChatOptions.AdditionalProperties</c> key of plain completion (OpenAI's <c>/v1/completions</c>): true
    /// encodes the messages' text, concatenated in order, as is (BOS first when the tokenizer has one) with no chat
    /// template; the reply ends at EOS or a stop sequence.
    /// </summary>
    public const string RawPromptKey = "looprpt.raw_prompt";

    /// <summary>
    /// The <c>ChatOptions.AdditionalProperties</c> key asking for log-probabilities: an integer from 0 to
    /// <see cref="GenerationRow.MaxTopLogprobs"/>, the alternatives wanted per token. The reply's
    /// <see cref="LoopRptGeneration.LogProbs"/> (in <c>RawRepresentation</c>) then gives every generated token's
    /// log-probability at its exit loop; streamed updates carry a <see cref="LoopRptDelta"/> as their <c>RawRepresentation</c>.
    /// </summary>
    public const string TopLogprobsKey = "looprpt.top_logprobs";

    /// <summary>
    /// The <c>ChatOptions.AdditionalProperties</c> key of a choice index i &gt;= 0 (OpenAI's <c>n</c>): the request samples
    /// with seed (Seed or the client's default) + i, so the n choices of one seeded request differ and each is reproducible.
    /// </summary>
    public const string ChoiceKey = "looprpt.choice";

    /// <summary>The <c>UsageDetails.AdditionalCounts</c> key of the loops spent.</summary>
    public const string LoopsKey = "loops";

    /// <summary>The response <c>AdditionalProperties</c> key of the model version that produced the reply.</summary>
    public const string ModelVersionKey = "model_version";

    /// <summary>The response <c>AdditionalProperties</c> key of the mean loops (exit step) per generated token.</summary>
    public const string MeanLoopsKey = "mean_loops";

    /// <summary>The response <c>AdditionalProperties</c> key of the model's loops per token at full depth.</summary>
    public const string FullDepthLoopsKey = "full_depth_loops";

    private readonly HeldSource _source;
    private readonly LoopRptChatClientOptions _options;
    private readonly GenerationScheduler _scheduler;

    /// <summary>Creates a client generating with <paramref name="source"/>'s model.</summary>
    /// <param name="source">The model (fixed, or a model store's served version).</param>
    /// <param name="options">Request defaults (copied; later changes have no effect).</param>
    /// <param name="ownsSource">Dispose <paramref name="source"/> with the client (when it is disposable).</param>
    public LoopRptChatClient(ILoopRptModelSource source, LoopRptChatClientOptions? options = null, bool ownsSource = false)
    {
        _source = new HeldSource(source, ownsSource);
        _options = options?.Clone() ?? new LoopRptChatClientOptions();
        _options.Validate();
        _scheduler = new GenerationScheduler(source, _options.BatchSize, _options.JoinRunningBatch);
        Metadata = new ChatClientMetadata("looprpt", null, source.ModelId);
    }

    /// <summary>Provider "looprpt" and the source's model id.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = CreateRequest(messages, options, null, cancellationToken);
        var result = await _scheduler.Enqueue(request).ConfigureAwait(false);
        var message = new ChatMessage(ChatRole.Assistant, result.Text) { MessageId = Guid.NewGuid().ToString("N") };
        return new ChatResponse(message)
        {
            ResponseId = "chatcmpl-" + message.MessageId,
            ModelId = _source.Source.ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = Map(result.Finish),
            Usage = Usage(result),
            RawRepresentation = result,
            AdditionalProperties = Properties(result),
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateUnbounded<LoopRptDelta>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var request = CreateRequest(messages, options, delta => channel.Writer.TryWrite(delta), cancellationToken);
        var task = _scheduler.Enqueue(request);
        _ = task.ContinueWith(t => channel.Writer.TryComplete(), TaskScheduler.Default);
        var id = Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        await foreach (var delta in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();                   // no buffered text after a cancel
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta.Text)
            {
                ResponseId = "chatcmpl-" + id, MessageId = id, ModelId = _source.Source.ModelId, CreatedAt = created, RawRepresentation = delta,
            };
        }
        var result = await task.ConfigureAwait(false);
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(result))])
        {
            ResponseId = "chatcmpl-" + id, MessageId = id, ModelId = _source.Source.ModelId, CreatedAt = created,
            FinishReason = Map(result.Finish), RawRepresentation = result, AdditionalProperties = Properties(result),
        };
    }

    private GenerationRequest CreateRequest(IEnumerable<ChatMessage> messages, ChatOptions? options, Action<LoopRptDelta>? onText, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one chat message is needed.", nameof(messages));
        var settings = Settings(options, _options);
        var stops = options?.StopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToList() ?? [];
        if (Flag(options?.AdditionalProperties, RawPromptKey))
        {
            var prompt = string.Concat(list.Select(m => m.Text));
            return new GenerationRequest(codec => RawPrompt(prompt, codec, stops), settings, onText, cancellationToken);
        }
        var template = _options.Template;
        return new GenerationRequest(codec =>
        {
            var p = ChatTemplate.Render(list, codec, template);
            return stops.Count == 0 ? p : p with { StopStrings = [.. p.StopStrings, .. stops] };
        }, settings, onText, cancellationToken);
    }

    /// <summary>A plain-completion prompt: the text as is, framed by the core's start rule (<see cref="TextCodec.EncodePrompt"/>); no template.</summary>
    private static RenderedPrompt RawPrompt(string prompt, TextCodec codec, IReadOnlyList<string> stops)
    {
        var ids = codec.EncodePrompt(prompt).Select(i => (long)i).ToList();
        if (ids.Count == 0) throw new ArgumentException("The prompt is empty and the tokenizer has no BOS token to start from.", "prompt");
        return new RenderedPrompt([.. ids], codec.EosTokenId is { } eos ? [eos] : [], stops);
    }

    /// <summary>Resolves a request's settings from its options and the client's defaults, checking every value.</summary>
    internal static GenerationSettings Settings(ChatOptions? options, LoopRptChatClientOptions defaults)
    {
        if (options?.Tools is { Count: > 0 })
            throw new NotSupportedException("LoopRpt models do not call tools: ChatOptions.Tools must be empty.");
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("LoopRpt does not constrain output to JSON: ChatOptions.ResponseFormat must be text.");
        int? max = options?.MaxOutputTokens;
        if (max is < 1) throw new ArgumentOutOfRangeException(nameof(options), max, "MaxOutputTokens must be at least 1.");
        double temperature = options?.Temperature ?? defaults.Temperature;
        GenerationOptions.CheckTemperature(temperature, nameof(options));
        double topP = options?.TopP ?? defaults.TopP;
        GenerationOptions.CheckTopP(topP, nameof(options));
        long seed = options?.Seed ?? defaults.Seed;
        if (seed < 0) throw new ArgumentOutOfRangeException(nameof(options), seed, "Seed must be >= 0.");
        double? q = ExitThreshold(options?.AdditionalProperties) ?? defaults.ExitThreshold;
        int? top = Integer(options?.AdditionalProperties, TopLogprobsKey, 0, GenerationRow.MaxTopLogprobs);
        int choice = Integer(options?.AdditionalProperties, ChoiceKey, 0, int.MaxValue) ?? 0;
        return new GenerationSettings(max, defaults.MaxOutputTokens, temperature, topP, unchecked((ulong)seed + (ulong)choice), q,
            KvCache(options?.AdditionalProperties) ?? defaults.KvCache, top);
    }

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>] in <paramref name="properties"/>, if any.</summary>
    private static int? Integer(AdditionalPropertiesDictionary? properties, string key, int min, int max)
    {
        if (properties is null || !properties.TryGetValue(key, out var value)) return null;
        double? v = Number(value, key);
        if (v is { } x && !(x == Math.Floor(x) && x >= min && x <= max))
            throw new ArgumentOutOfRangeException("options", x, $"'{key}' must be an integer in [{min}, {max}].");
        return v is { } i ? (int)i : null;
    }

    /// <summary>The exit threshold in <paramref name="properties"/>, if any: a number (or numeric string) in [0, 1].</summary>
    internal static double? ExitThreshold(AdditionalPropertiesDictionary? properties)
    {
        if (properties is null || !properties.TryGetValue(ExitThresholdKey, out var value)) return null;
        double? q = Number(value, ExitThresholdKey);
        if (q is { } x && !(x is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException("options", x, $"'{ExitThresholdKey}' must lie in [0, 1] (1 = full depth).");
        return q;
    }

    /// <summary>A number of an options or response dictionary (as set in code, or a <see cref="JsonElement"/> after serialization).</summary>
    internal static double? Number(object? value, string key) => value switch
    {
        null or JsonElement { ValueKind: JsonValueKind.Null } => null,
        double d => d,
        float f => f,
        decimal m => (double)m,
        int i => i,
        long l => l,
        string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
        _ => throw new ArgumentException($"'{key}' must be a number, got {value} ({value.GetType().Name}).", "options"),
    };

    /// <summary>The request's key/value rule in <paramref name="properties"/>, if any: a <see cref="KvCacheMode"/> or its name.</summary>
    private static KvCacheMode? KvCache(AdditionalPropertiesDictionary? properties)
    {
        if (properties is null || !properties.TryGetValue(KvCacheKey, out var value) || value is null) return null;
        var name = value is JsonElement { ValueKind: JsonValueKind.String } e ? e.GetString() : value is KvCacheMode or string ? value.ToString() : null;
        foreach (var mode in Enum.GetValues<KvCacheMode>())
            if (string.Equals(mode.ToString(), name, StringComparison.OrdinalIgnoreCase)) return mode;
        throw new ArgumentException($"'{KvCacheKey}' must be one of {string.Join(", ", Enum.GetNames<KvCacheMode>())}, got {value}.", "options");
    }

    /// <summary>A true/false flag in <paramref name="properties"/> (a bool, "true"/"false" or a JSON boolean); absent = false.</summary>
    private static bool Flag(AdditionalPropertiesDictionary? properties, string key)
    {
        if (properties is null || !properties.TryGetValue(key, out var value) || value is null) return false;
        return value switch
        {
            bool b => b,
            string s when bool.TryParse(s, out var b) => b,
            JsonElement { ValueKind: JsonValueKind.True or JsonValueKind.False } e => e.GetBoolean(),
            _ => throw new ArgumentException($"'{key}' must be true or false, got {value}.", "options"),
        };
    }

    private static ChatFinishReason Map(ReplyFinish finish) => finish == ReplyFinish.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(LoopRptGeneration g) => new()
    {
        InputTokenCount = g.PromptTokens,
        OutputTokenCount = g.Tokens.Length,
        TotalTokenCount = g.PromptTokens + g.Tokens.Length,
        AdditionalCounts = new AdditionalPropertiesDictionary<long> { [LoopsKey] = g.LoopsSpent },
    };

    private static AdditionalPropertiesDictionary Properties(LoopRptGeneration g) => new()
    {
        [ModelVersionKey] = g.ModelVersion,
        [MeanLoopsKey] = g.MeanLoops,
        [FullDepthLoopsKey] = g.Loops,
    };

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null) => _source.GetService(this, Metadata, serviceType, serviceKey);

    /// <inheritdoc/>
    public void Dispose()
    {
        _scheduler.Dispose();
        _source.Dispose();
    }
}

/// <summary>
/// LoopRpt's accounting of one reply, read back from what an <see cref="IChatClient"/> pipeline returned: from the
/// <see cref="LoopRptGeneration"/> in <c>RawRepresentation</c> when it is there, else from <c>Usage</c> and
/// <c>AdditionalProperties</c> (which survive middleware that rebuilds responses, e.g. a distributed cache that
/// serializes them; the per-token loops are then unknown).
/// </summary>
/// <param name="PromptTokens">The rendered prompt's token count.</param>
/// <param name="OutputTokens">Generated tokens (an end token included).</param>
/// <param name="Loops">Loops spent over all generated tokens.</param>
/// <param name="MeanLoops">Mean loops (exit step) per generated token; NaN when none was generated.</param>
/// <param name="ModelVersion">The model version that produced the reply; null when the response does not say.</param>
public sealed record LoopRptUsage(long PromptTokens, long OutputTokens, long Loops, double MeanLoops, int? ModelVersion)
{
    /// <summary>The accounting of <paramref name="generation"/>.</summary>
    public static LoopRptUsage From(LoopRptGeneration generation)
    {
        ArgumentNullException.ThrowIfNull(generation);
        return new(generation.PromptTokens, generation.Tokens.Length, generation.LoopsSpent, generation.MeanLoops, generation.ModelVersion);
    }

    /// <summary>The accounting of a response (see the type's remarks for what middleware may have dropped).</summary>
    public static LoopRptUsage From(ChatResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return response.RawRepresentation is LoopRptGeneration g ? From(g) : From(response.Usage, response.AdditionalProperties);
    }

    /// <summary>The accounting of a streamed reply: its updates, in order (LoopRpt's last update carries it).</summary>
    public static LoopRptUsage From(IEnumerable<ChatResponseUpdate> updates)
    {
        ArgumentNullException.ThrowIfNull(updates);
        var list = updates.ToList();
        if (list.Select(u => u.RawRepresentation).OfType<LoopRptGeneration>().LastOrDefault() is { } g) return From(g);
        var usage = list.SelectMany(u => u.Contents).OfType<UsageContent>().LastOrDefault()?.Details;
        return From(usage, list.LastOrDefault(u => u.AdditionalProperties is { Count: > 0 })?.AdditionalProperties);
    }

    private static LoopRptUsage From(UsageDetails? usage, AdditionalPropertiesDictionary? properties)
    {
        long output = usage?.OutputTokenCount ?? 0;
        long loops = usage?.AdditionalCounts is { } counts && counts.TryGetValue(LoopRptChatClient.LoopsKey, out var l) ? l : 0;
        double? mean = properties?.TryGetValue(LoopRptChatClient.MeanLoopsKey, out var m) == true ? LoopRptChatClient.Number(m, LoopRptChatClient.MeanLoopsKey) : null;
        double? version = properties?.TryGetValue(LoopRptChatClient.ModelVersionKey, out var v) == true ? LoopRptChatClient.Number(v, LoopRptChatClient.ModelVersionKey) : null;
        return new(usage?.InputTokenCount ?? 0, output, loops, mean ?? (output == 0 ? double.NaN : (double)loops / output), version is { } x ? (int)x : null);
    }
}
