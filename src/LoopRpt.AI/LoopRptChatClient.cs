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
/// | MaxOutputTokens | tokens generated at most (default <see cref="LoopRptChatClientOptions.MaxOutputTokens"/>) |
/// | Temperature | softmax temperature; 0 = greedy |
/// | TopP | nucleus mass in (0, 1] |
/// | StopSequences | strings that end the reply (not included in it) |
/// | Seed | seed of the request's own sampling generator |
/// | AdditionalProperties[<see cref="ExitThresholdKey"/>] | exit threshold q in [0, 1] (a number or a numeric string) |
/// | Tools, ResponseFormat (JSON) | not supported: <see cref="NotSupportedException"/> |
///
/// The response's <see cref="UsageDetails"/> has input, output and total tokens, and
/// <c>AdditionalCounts["loops"]</c>, the loops spent over all generated tokens (a full-depth model spends
/// output tokens × loops). <see cref="ChatResponse.RawRepresentation"/> is the <see cref="LoopRptGeneration"/>
/// (token ids, loops per token, model version). Concurrent callers share batched decoding (<see cref="GenerationScheduler"/>);
/// streaming yields text as tokens are sampled, and cancelling a call ends its row at the next token.
/// </remarks>
public sealed class LoopRptChatClient : IChatClient
{
    /// <summary>The <c>ChatOptions.AdditionalProperties</c> key (and OpenAI request field) for the exit threshold q.</summary>
    public const string ExitThresholdKey = "exit_threshold";

    /// <summary>The <c>UsageDetails.AdditionalCounts</c> key of the loops spent.</summary>
    public const string LoopsKey = "loops";

    private readonly ILoopRptModelSource _source;
    private readonly LoopRptChatClientOptions _options;
    private readonly GenerationScheduler _scheduler;
    private readonly bool _ownsSource;

    /// <summary>Creates a client generating with <paramref name="source"/>'s model.</summary>
    /// <param name="source">The model (fixed, or a model store's served version).</param>
    /// <param name="options">Request defaults (copied; later changes have no effect).</param>
    /// <param name="ownsSource">Dispose <paramref name="source"/> with the client (when it is disposable).</param>
    public LoopRptChatClient(ILoopRptModelSource source, LoopRptChatClientOptions? options = null, bool ownsSource = false)
    {
        _source = source ?? throw new ArgumentNullException(nameof(source));
        var o = options ?? new LoopRptChatClientOptions();
        _options = new LoopRptChatClientOptions
        {
            MaxOutputTokens = o.MaxOutputTokens, Temperature = o.Temperature, TopP = o.TopP, Seed = o.Seed, ExitThreshold = o.ExitThreshold,
            Template = o.Template, BatchSize = o.BatchSize, KvCache = o.KvCache,
        };
        _options.Validate();
        _ownsSource = ownsSource;
        _scheduler = new GenerationScheduler(source, _options.BatchSize);
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
            ModelId = _source.ModelId,
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
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var request = CreateRequest(messages, options, delta => channel.Writer.TryWrite(delta), cancellationToken);
        var task = _scheduler.Enqueue(request);
        _ = task.ContinueWith(t => channel.Writer.TryComplete(), TaskScheduler.Default);
        var id = Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        await foreach (var delta in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();                   // no buffered text after a cancel
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta)
            {
                ResponseId = "chatcmpl-" + id, MessageId = id, ModelId = _source.ModelId, CreatedAt = created,
            };
        }
        var result = await task.ConfigureAwait(false);
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(result))])
        {
            ResponseId = "chatcmpl-" + id, MessageId = id, ModelId = _source.ModelId, CreatedAt = created,
            FinishReason = Map(result.Finish), RawRepresentation = result, AdditionalProperties = Properties(result),
        };
    }

    /// <summary>Generates a reply to <paramref name="messages"/> (the server's path: raw result, text deltas to <paramref name="onText"/>).</summary>
    internal Task<LoopRptGeneration> GenerateAsync(IEnumerable<ChatMessage> messages, ChatOptions? options, Action<string>? onText, CancellationToken cancellationToken)
        => _scheduler.Enqueue(CreateRequest(messages, options, onText, cancellationToken));

    /// <summary>Continues a raw text prompt (BOS first when the tokenizer has one; no chat template).</summary>
    internal Task<LoopRptGeneration> CompleteAsync(string prompt, ChatOptions? options, Action<string>? onText, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var settings = Settings(options, _options);
        var stops = options?.StopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToList() ?? [];
        return _scheduler.Enqueue(new GenerationRequest(codec =>
        {
            var ids = codec.EncodePrompt(prompt).Select(i => (long)i).ToList();
            if (ids.Count == 0) throw new ArgumentException("The prompt is empty and the tokenizer has no BOS token to start from.", "prompt");
            return new RenderedPrompt([.. ids], codec.EosTokenId is { } eos ? [eos] : [], stops);
        }, settings, onText, cancellationToken));
    }

    private GenerationRequest CreateRequest(IEnumerable<ChatMessage> messages, ChatOptions? options, Action<string>? onText, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one chat message is needed.", nameof(messages));
        var settings = Settings(options, _options);
        var stops = options?.StopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToList() ?? [];
        var template = _options.Template;
        return new GenerationRequest(codec =>
        {
            var p = ChatTemplate.Render(list, codec, template);
            return stops.Count == 0 ? p : p with { StopStrings = [.. p.StopStrings, .. stops] };
        }, settings, onText, cancellationToken);
    }

    /// <summary>Resolves a request's settings from its options and the client's defaults, checking every value.</summary>
    internal static GenerationSettings Settings(ChatOptions? options, LoopRptChatClientOptions defaults)
    {
        if (options?.Tools is { Count: > 0 })
            throw new NotSupportedException("LoopRpt models do not call tools: ChatOptions.Tools must be empty.");
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("LoopRpt does not constrain output to JSON: ChatOptions.ResponseFormat must be text.");
        int max = options?.MaxOutputTokens ?? defaults.MaxOutputTokens;
        if (max < 1) throw new ArgumentOutOfRangeException(nameof(options), max, "MaxOutputTokens must be at least 1.");
        double temperature = options?.Temperature ?? defaults.Temperature;
        if (!(temperature >= 0) || double.IsInfinity(temperature)) throw new ArgumentOutOfRangeException(nameof(options), temperature, "Temperature must be a finite number >= 0 (0 = greedy).");
        double topP = options?.TopP ?? defaults.TopP;
        if (!(topP > 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(options), topP, "TopP must lie in (0, 1].");
        long seed = options?.Seed ?? defaults.Seed;
        if (seed < 0) throw new ArgumentOutOfRangeException(nameof(options), seed, "Seed must be >= 0.");
        double? q = ExitThreshold(options?.AdditionalProperties) ?? defaults.ExitThreshold;
        return new GenerationSettings(max, temperature, topP, (ulong)seed, q, defaults.KvCache);
    }

    /// <summary>The exit threshold in <paramref name="properties"/>, if any: a number (or numeric string) in [0, 1].</summary>
    internal static double? ExitThreshold(AdditionalPropertiesDictionary? properties)
    {
        if (properties is null || !properties.TryGetValue(ExitThresholdKey, out var value) || value is null) return null;
        double? q = value switch
        {
            double d => d,
            float f => f,
            decimal m => (double)m,
            int i => i,
            long l => l,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
            JsonElement { ValueKind: JsonValueKind.Null } => null,
            _ => throw new ArgumentException($"'{ExitThresholdKey}' must be a number in [0, 1], got {value} ({value.GetType().Name}).", "options"),
        };
        if (q is { } x && !(x is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException("options", x, $"'{ExitThresholdKey}' must lie in [0, 1] (1 = full depth).");
        return q;
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
        ["model_version"] = g.ModelVersion,
        ["mean_loops"] = g.MeanLoops,
        ["full_depth_loops"] = g.Loops,
    };

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_source)) return _source;
        return null;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _scheduler.Dispose();
        if (_ownsSource) (_source as IDisposable)?.Dispose();
    }
}
