using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace LoopRpt.Server;

/// <summary>
/// The OpenAI wire format over LoopRpt (docs/serving.md): <c>POST /v1/chat/completions</c>, <c>POST /v1/completions</c>
/// (both with <c>stream: true</c> as server-sent events), <c>POST /v1/embeddings</c>, <c>GET /v1/models</c>, LoopRpt's
/// <c>POST /v1/score</c> and <c>GET /healthz</c>. Every request may carry <c>exit_threshold</c>; usage adds <c>loops</c>
/// and <c>system_fingerprint</c> names the model version (<c>looprpt-vN</c>).
/// </summary>
public static class OpenAIEndpoints
{
    /// <summary>The server's meter: <c>LoopRpt.Server</c>.</summary>
    public const string MeterName = "LoopRpt.Server";

    private static readonly Meter Meter = new(MeterName);
    private static readonly Counter<long> Requests = Meter.CreateCounter<long>("looprpt.server.requests", "{request}", "Requests answered, by route and status.");
    private static readonly Histogram<double> Duration = Meter.CreateHistogram<double>("looprpt.server.request.duration", "s", "Time to answer a request.");
    private static readonly JsonSerializerOptions Json = new() { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.Never };

    /// <summary>Every route and the one method it answers; any other method gets HTTP 405 with an <c>Allow</c> header.</summary>
    private static readonly (string Path, string Method)[] Routes =
    [
        ("/healthz", "GET"), ("/v1/models", "GET"), ("/v1/models/{**id}", "GET"), ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"), ("/v1/embeddings", "POST"), ("/v1/score", "POST"),
    ];

    /// <summary>
    /// Maps every endpoint; the services come from <see cref="LoopRptServer.AddLoopRptServer"/>. Every <c>/v1</c>
    /// route requires the API key when one is set (<see cref="LoopRptServerOptions.ApiKey"/>); a wrong method on any
    /// route gets HTTP 405 with <c>Allow</c>.
    /// </summary>
    public static IEndpointRouteBuilder MapLoopRptOpenAI(this IEndpointRouteBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapGet("/healthz", (ILoopRptModelSource source) =>
        {
            using var lease = source.Acquire();
            return Results.Json(new { status = "ok", model = source.ModelId, version = lease.Version });
        });
        var v1 = app.MapGroup("").AddEndpointFilter(ApiKeyCheck.Filter);
        v1.MapGet("/v1/models", (ILoopRptModelSource source) => Results.Json(new { @object = "list", data = new[] { ModelObject(source.ModelId) } }));
        v1.MapGet("/v1/models/{**id}", (string id, ILoopRptModelSource source) => id == source.ModelId
            ? Results.Json(ModelObject(id))
            : Results.Json(ApiError.ModelNotFound(id, source.ModelId).Body, Json, statusCode: 404));
        v1.MapPost("/v1/chat/completions", (HttpContext http) => Serve(http, "chat", Chat));
        v1.MapPost("/v1/completions", (HttpContext http) => Serve(http, "completions", Completions));
        v1.MapPost("/v1/embeddings", (HttpContext http) => Serve(http, "embeddings", Embeddings));
        v1.MapPost("/v1/score", (HttpContext http) => Serve(http, "score", Score));
        foreach (var (path, method) in Routes)
        {
            // Any method: ordered after the route's own endpoint, so it answers only the other methods.
            var wrong = (path.StartsWith("/v1/", StringComparison.Ordinal) ? v1 : app).Map(path, (HttpContext http) =>
            {
                http.Response.Headers.Allow = method;
                return Results.Json(new ApiError(405, $"{http.Request.Method} is not allowed on {http.Request.Path}; use {method}.", code: "method_not_allowed").Body, Json, statusCode: 405);
            });
            wrong.WithOrder(1);
        }
        return app;
    }

    private static object ModelObject(string id) => new { id, @object = "model", created = 0L, owned_by = "looprpt" };

    /// <summary>
    /// The request field behind a parameter name that a Microsoft.Extensions.AI call reports in an
    /// <see cref="ArgumentException"/> (the only ones the server does not check before the call).
    /// </summary>
    private static string? Field(string route, string? name) => (route, name) switch
    {
        ("embeddings", "values") => "input",
        ("embeddings", "options") => "dimensions",
        ("completions", "messages") => "prompt",
        _ => name,
    };

    /// <summary>Limits (concurrency, timeout, body size), the accepted fields, the error shape and the metrics around one endpoint.</summary>
    private static async Task Serve(HttpContext http, string route, Func<HttpContext, JsonObject, LoopRptServerOptions, CancellationToken, Task> handler)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<LoopRptServerOptions>>().Value;
        var gate = http.RequestServices.GetRequiredService<RequestGate>();
        var clock = Stopwatch.StartNew();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        timeout.CancelAfter(TimeSpan.FromSeconds(options.RequestTimeoutSeconds));
        bool entered = gate.TryEnter();
        try
        {
            if (!entered)
            {
                http.Response.Headers.RetryAfter = "1";
                throw new ApiError(429, $"The server is serving its limit of {options.MaxConcurrentRequests} requests; retry shortly.", "rate_limit_error", code: "too_many_requests");
            }
            var body = await RequestReader.ReadObjectAsync(http.Request, options.MaxRequestBodyBytes, timeout.Token);
            RequestFields.Check(body, route);
            RequestReader.CheckModel(body, http.RequestServices.GetRequiredService<ILoopRptModelSource>().ModelId);
            await handler(http, body, options, timeout.Token);
        }
        catch (Exception e) when (!http.RequestAborted.IsCancellationRequested)
        {
            var error = ApiError.From(e, timeout.IsCancellationRequested, name => Field(route, name));
            if (error.ErrorId is not null)
                http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(LoopRptServer))
                    .LogError(e, "Request {Method} {Path} failed ({Route}); error id {ErrorId}", http.Request.Method, http.Request.Path.Value, route, error.ErrorId);
            if (!http.Response.HasStarted)
            {
                http.Response.StatusCode = error.Status;
                await http.Response.WriteAsJsonAsync(error.Body, Json, CancellationToken.None);
            }
            else
            {
                // A stream that already started ends with the error as one event, then [DONE] (as vLLM does).
                await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(error.Body, Json) + "\n\n" + Done, CancellationToken.None);
            }
        }
        finally
        {
            if (entered) gate.Exit();
            var tags = new TagList { { "route", route }, { "status", http.Response.StatusCode } };
            Requests.Add(1, tags);
            Duration.Record(clock.Elapsed.TotalSeconds, tags);
        }
    }

    /// <summary>The event that ends every stream.</summary>
    private const string Done = "data: [DONE]\n\n";

    /// <summary>
    /// One token of a reply as the wire shows it: its text, its log-probability (null for an echoed prompt's first token),
    /// its exit loop and its most likely alternatives (null for echoed prompt tokens).
    /// </summary>
    private sealed record WireToken(string Token, double? LogProb, int? ExitLoop, IReadOnlyList<LoopRptTopLogProb>? Top);

    private static WireToken Wire(LoopRptTokenLogProb t) => new(t.Token, t.LogProb, t.ExitLoop, t.Top);

    /// <summary>How one generation route writes its replies on the wire.</summary>
    /// <param name="Object">The <c>object</c> of a whole reply.</param>
    /// <param name="ChunkObject">The <c>object</c> of a streamed chunk.</param>
    /// <param name="IdPrefix">The reply id's prefix.</param>
    /// <param name="Choice">A whole reply's choice from its index, text, finish reason and logprobs object.</param>
    /// <param name="Chunk">A streamed choice from its index, a text delta, whether it is the first, and a logprobs object.</param>
    /// <param name="FinishChunk">The streamed choice that carries the finish reason (and the logprobs of tokens not sent yet).</param>
    /// <param name="LogProbs">The logprobs object of some tokens, the first of which starts at a text offset.</param>
    private sealed record WireShape(string Object, string ChunkObject, string IdPrefix, Func<int, string, string, object?, object> Choice,
        Func<int, string, bool, object?, object> Chunk, Func<int, string, object?, object> FinishChunk, Func<IReadOnlyList<WireToken>, int, object> LogProbs);

    private static readonly WireShape ChatShape = new("chat.completion", "chat.completion.chunk", "chatcmpl-",
        (index, text, finish, logprobs) => new { index, message = new { role = "assistant", content = text }, logprobs, finish_reason = finish },
        (index, delta, first, logprobs) => new { index, delta = first ? (object)new { role = "assistant", content = delta } : new { content = delta }, logprobs, finish_reason = (string?)null },
        (index, finish, logprobs) => new { index, delta = new { }, logprobs, finish_reason = finish },
        (tokens, _) => new
        {
            content = tokens.Select(t => new
            {
                token = t.Token,
                logprob = t.LogProb,
                bytes = Bytes(t.Token),
                top_logprobs = (t.Top ?? []).Select(a => new { token = a.Token, logprob = a.LogProb, bytes = Bytes(a.Token) }).ToArray(),
                exit_loop = t.ExitLoop,
            }).ToArray(),
            refusal = (string?)null,
        });

    private static readonly WireShape CompletionShape = new("text_completion", "text_completion", "cmpl-",
        (index, text, finish, logprobs) => new { index, text, logprobs, finish_reason = finish },
        (index, delta, _, logprobs) => new { index, text = delta, logprobs, finish_reason = (string?)null },
        (index, finish, logprobs) => new { index, text = "", logprobs, finish_reason = finish },
        (tokens, offset) =>
        {
            var offsets = new int[tokens.Count];
            for (int i = 0; i < tokens.Count; offset += tokens[i].Token.Length, i++) offsets[i] = offset;
            return new
            {
                tokens = tokens.Select(t => t.Token).ToArray(),
                token_logprobs = tokens.Select(t => t.LogProb).ToArray(),
                top_logprobs = tokens.Select(t => t.Top is null ? null : TopMap(t.Top)).ToArray(),
                text_offset = offsets,
                exit_loops = tokens.Select(t => t.ExitLoop).ToArray(),
            };
        });

    /// <summary>The UTF-8 bytes of a token's text (OpenAI's <c>bytes</c>).</summary>
    private static int[] Bytes(string token) => System.Text.Encoding.UTF8.GetBytes(token).Select(b => (int)b).ToArray();

    /// <summary>Legacy completions' alternatives as {token: logprob}; of two alternatives with the same text, the likelier one.</summary>
    private static Dictionary<string, double> TopMap(IReadOnlyList<LoopRptTopLogProb> top)
    {
        var map = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var t in top) map.TryAdd(t.Token, t.LogProb);
        return map;
    }

    /// <summary>What one generation request asks for beyond the chat options.</summary>
    /// <param name="Choices">n: the choices wanted (choice i samples with seed + i).</param>
    /// <param name="TopLogprobs">Null: no logprobs; else the alternatives per token.</param>
    /// <param name="Echo">The prompt text to put before each choice's text (completions' <c>echo</c>), or null.</param>
    /// <param name="EchoTokens">The echoed prompt's tokens with their log-probabilities, when logprobs are asked for too.</param>
    private sealed record ReplyPlan(int Choices, int? TopLogprobs, string? Echo, IReadOnlyList<WireToken>? EchoTokens);

    private static Task Chat(HttpContext http, JsonObject body, LoopRptServerOptions server, CancellationToken ct)
    {
        var messages = RequestReader.Messages(body);
        var plan = new ReplyPlan(RequestReader.Choices(body), RequestReader.ChatLogprobs(body), null, null);
        return Reply(http, body, messages, RequestReader.Options(body, server), server, ChatShape, plan, ct);
    }

    /// <summary>A plain completion: the prompt goes to the chat client as one message marked <see cref="LoopRptChatClient.RawPromptKey"/>.</summary>
    private static async Task Completions(HttpContext http, JsonObject body, LoopRptServerOptions server, CancellationToken ct)
    {
        var prompts = RequestReader.Strings(body, "prompt", 1);
        var options = RequestReader.Options(body, server);
        int n = RequestReader.Choices(body);
        int? logprobs = RequestReader.CompletionLogprobs(body);
        bool echo = RequestReader.Bool(body, "echo");
        (options.AdditionalProperties ??= [])[LoopRptChatClient.RawPromptKey] = true;
        var echoTokens = echo && logprobs is not null
            ? await Task.Run(() => PromptTokens(http.RequestServices.GetRequiredService<ILoopRptModelSource>(), prompts[0], RequestReader.ExitThreshold(body)), ct)
            : null;
        await Reply(http, body, [new ChatMessage(ChatRole.User, prompts[0])], options, server, CompletionShape,
            new ReplyPlan(n, logprobs, echo ? prompts[0] : null, echoTokens), ct);
    }

    /// <summary>
    /// An echoed prompt's tokens with their log-probabilities from the core's <see cref="DocumentScorer"/> (each predicted
    /// from the tokens before it, at its exit loop; the first has none), framed as generation frames the prompt.
    /// </summary>
    private static List<WireToken> PromptTokens(ILoopRptModelSource source, string prompt, double? q)
    {
        using var lease = source.Acquire();
        var ids = lease.Codec.EncodePrompt(prompt);
        var scored = new DocumentScorer(lease.Model, new DocumentScorerOptions { Exit = q is { } x ? ExitMode.Q(x) : null }).Score([ids])[0];
        return ids.Select((id, i) => new WireToken(lease.Codec.Decode([id]), i == 0 ? null : scored.TokenLogProbabilities[i - 1],
            i == 0 ? null : (int)scored.ExitSteps[i - 1], null)).ToList();
    }

    /// <summary>Choice <paramref name="index"/>'s options: choice i of n samples with seed + i (<see cref="LoopRptChatClient.ChoiceKey"/>).</summary>
    private static ChatOptions ForChoice(ChatOptions options, ReplyPlan plan, int index)
    {
        var o = options.Clone();
        var properties = new AdditionalPropertiesDictionary();
        foreach (var (key, value) in options.AdditionalProperties ?? []) properties[key] = value;
        if (plan.Choices > 1) properties[LoopRptChatClient.ChoiceKey] = index;
        if (plan.TopLogprobs is { } top) properties[LoopRptChatClient.TopLogprobsKey] = top;
        o.AdditionalProperties = properties;
        return o;
    }

    /// <summary>The accounting of n choices: the prompt once, every choice's completion tokens and loops.</summary>
    private static LoopRptUsage Sum(IReadOnlyList<LoopRptUsage> choices)
    {
        long output = choices.Sum(c => c.OutputTokens), loops = choices.Sum(c => c.Loops);
        return new(choices[0].PromptTokens, output, loops, output == 0 ? double.NaN : (double)loops / output, choices[0].ModelVersion);
    }

    /// <summary>
    /// One reply of n choices through the registered <see cref="IChatClient"/> (and whatever middleware wraps it), whole
    /// or streamed. The choices are n concurrent calls, which the generation scheduler decodes in one batch.
    /// </summary>
    private static async Task Reply(HttpContext http, JsonObject body, List<ChatMessage> messages, ChatOptions options, LoopRptServerOptions server,
        WireShape shape, ReplyPlan plan, CancellationToken ct)
    {
        var client = http.RequestServices.GetRequiredService<IChatClient>();
        var model = http.RequestServices.GetRequiredService<ILoopRptModelSource>().ModelId;
        bool stream = RequestReader.Bool(body, "stream");
        bool usage = RequestReader.IncludeUsage(body);
        Budget(client, options, server);
        if (stream)
        {
            await Stream(http, shape, model, usage, plan, i => client.GetStreamingResponseAsync(messages, ForChoice(options, plan, i), ct), ct);
            return;
        }
        var responses = await Task.WhenAll(Enumerable.Range(0, plan.Choices).Select(i => client.GetResponseAsync(messages, ForChoice(options, plan, i), ct)));
        var u = Sum(responses.Select(LoopRptUsage.From).ToList());
        await http.Response.WriteAsJsonAsync(new
        {
            id = shape.IdPrefix + Guid.NewGuid().ToString("N"),
            @object = shape.Object,
            created = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            model,
            system_fingerprint = Fingerprint(u),
            choices = responses.Select((r, i) =>
            {
                object? logprobs = null;
                if (plan.TopLogprobs is not null)
                {
                    var generated = (r.RawRepresentation as LoopRptGeneration)?.LogProbs?.Select(Wire) ?? [];
                    logprobs = shape.LogProbs([.. plan.EchoTokens ?? [], .. generated], 0);
                }
                return shape.Choice(i, plan.Echo + r.Text, Finish(r.FinishReason), logprobs);
            }).ToArray(),
            usage = Usage(u),
        }, Json, ct);
    }

    /// <summary>
    /// A request that gives no token limit generates up to the room left in the context (context − prompt tokens): LoopRpt's
    /// chat client does so when <see cref="ChatOptions.MaxOutputTokens"/> is unset, capped by its
    /// <see cref="LoopRptChatClientOptions.MaxOutputTokens"/>, which the server's own registration sets to
    /// <see cref="LoopRptServerOptions.MaxTokens"/>. A client that is not LoopRpt's gets the server's limit, or its own
    /// default when there is none.
    /// </summary>
    private static void Budget(IChatClient client, ChatOptions options, LoopRptServerOptions server)
    {
        if (options.MaxOutputTokens is null && client.GetService<LoopRptChatClient>() is null) options.MaxOutputTokens = server.MaxTokens;
    }

    /// <summary>What a stream has sent of one choice.</summary>
    private sealed class ChoiceState
    {
        public readonly List<ChatResponseUpdate> Seen = [];
        public bool First = true;
        public int LogProbsSent, Offset;
    }

    /// <summary>
    /// Server-sent events: the n choices' text chunks as they are generated (each with its index and, when asked, the
    /// logprobs of its tokens), each choice's finishing chunk when it ends, usage over all choices (when asked), [DONE].
    /// </summary>
    private static async Task Stream(HttpContext http, WireShape shape, string model, bool includeUsage, ReplyPlan plan,
        Func<int, IAsyncEnumerable<ChatResponseUpdate>> updates, CancellationToken ct)
    {
        var id = shape.IdPrefix + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        async Task Send(object payload)
        {
            if (!http.Response.HasStarted)
            {
                http.Response.ContentType = "text/event-stream";
                http.Response.Headers.CacheControl = "no-cache";
            }
            await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload, Json) + "\n\n", ct);
            await http.Response.Body.FlushAsync(ct);
        }
        object Envelope(object[] choices, string? fingerprint, object? usage = null)
            => new { id, @object = shape.ChunkObject, created, model, system_fingerprint = fingerprint, choices, usage };
        object? LogProbs(ChoiceState state, IReadOnlyList<WireToken> tokens)
        {
            if (plan.TopLogprobs is null) return null;
            var o = shape.LogProbs(tokens, state.Offset);
            state.Offset += tokens.Sum(t => t.Token.Length);
            return o;
        }

        // The choices' updates merged into one sequence; (i, null) says choice i has ended. A failing choice ends the
        // merge with its error and cancels the others.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var merged = Channel.CreateUnbounded<(int Index, ChatResponseUpdate? Update)>(new UnboundedChannelOptions { SingleReader = true });
        Exception? failure = null;
        var producers = Enumerable.Range(0, plan.Choices).Select(i => Task.Run(async () =>
        {
            try
            {
                await foreach (var update in updates(i).WithCancellation(stop.Token)) await merged.Writer.WriteAsync((i, update), stop.Token);
                await merged.Writer.WriteAsync((i, null), stop.Token);
            }
            catch (Exception e)
            {
                if (Interlocked.CompareExchange(ref failure, e, null) is null) merged.Writer.TryComplete();
                await stop.CancelAsync();
            }
        })).ToArray();
        _ = Task.WhenAll(producers).ContinueWith(_ => merged.Writer.TryComplete(), TaskScheduler.Default);

        try
        {
            var states = Enumerable.Range(0, plan.Choices).Select(_ => new ChoiceState()).ToArray();
            async Task Text(int i, string text, IReadOnlyList<WireToken> tokens)
            {
                var state = states[i];
                await Send(Envelope([shape.Chunk(i, text, state.First, LogProbs(state, tokens))], null));
                state.First = false;
            }
            if (plan.Echo is { } echo)
                for (int i = 0; i < plan.Choices; i++) await Text(i, echo, plan.EchoTokens ?? []);
            await foreach (var (i, update) in merged.Reader.ReadAllAsync(ct))   // a failure before any chunk becomes an ordinary error response
            {
                var state = states[i];
                if (update is not null)
                {
                    state.Seen.Add(update);
                    var tokens = update.RawRepresentation is LoopRptDelta d ? d.LogProbs.Select(Wire).ToList() : [];
                    state.LogProbsSent += tokens.Count;
                    if (update.Text is { Length: > 0 } || tokens.Count > 0) await Text(i, update.Text ?? "", tokens);
                    continue;
                }
                var u = LoopRptUsage.From(state.Seen);
                if (state.First) await Text(i, "", []);
                var rest = state.Seen.Select(x => x.RawRepresentation).OfType<LoopRptGeneration>().LastOrDefault()?.LogProbs?.Skip(state.LogProbsSent).Select(Wire).ToList() ?? [];
                var finish = Finish(state.Seen.LastOrDefault(x => x.FinishReason is not null)?.FinishReason);
                await Send(Envelope([shape.FinishChunk(i, finish, rest.Count > 0 ? LogProbs(state, rest) : null)], Fingerprint(u)));
            }
            if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            if (includeUsage)
            {
                var total = Sum(states.Select(s => LoopRptUsage.From(s.Seen)).ToList());
                await Send(Envelope([], Fingerprint(total), Usage(total)));
            }
            await http.Response.WriteAsync(Done, ct);
        }
        finally
        {
            // A reply that ended early (an error, a client gone) stops the other choices; none outlives the request.
            await stop.CancelAsync();
            await Task.WhenAll(producers);
        }
    }

    private static async Task Embeddings(HttpContext http, JsonObject body, LoopRptServerOptions server, CancellationToken ct)
    {
        var generator = http.RequestServices.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
        var inputs = RequestReader.Strings(body, "input", server.MaxInputs);
        var format = body["encoding_format"] is { } f && f.GetValueKind() != JsonValueKind.Null ? f.GetValueKind() == JsonValueKind.String ? (string)f! : f.ToJsonString() : "float";
        if (format is not ("float" or "base64")) throw new ApiError(400, $"encoding_format '{format}' is not supported; use float or base64.", param: "encoding_format", code: "unsupported_value");
        var options = new EmbeddingGenerationOptions { Dimensions = RequestReader.PositiveInt(body, "dimensions") };
        if (RequestReader.ExitThreshold(body) is { } q) options.AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = q };
        var result = await generator.GenerateAsync(inputs, options, ct);
        var data = result.Select((e, i) => new
        {
            @object = "embedding",
            index = i,
            embedding = format == "base64" ? (object)Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(e.Vector.Span)) : e.Vector.ToArray(),
        }).ToArray();
        await http.Response.WriteAsJsonAsync(new
        {
            @object = "list",
            data,
            model = http.RequestServices.GetRequiredService<ILoopRptModelSource>().ModelId,
            usage = new
            {
                prompt_tokens = result.Usage?.InputTokenCount ?? 0,
                total_tokens = result.Usage?.InputTokenCount ?? 0,
                loops = result.Usage?.AdditionalCounts is { } counts && counts.TryGetValue(LoopRptChatClient.LoopsKey, out var loops) ? loops : 0,
            },
            model_version = result.AdditionalProperties is { } p && p.TryGetValue(LoopRptChatClient.ModelVersionKey, out var version) ? version : null,
        }, Json, ct);
    }

    /// <summary>
    /// LoopRpt's scoring endpoint, a binder over the core <see cref="DocumentScorer"/> (docs/adaptive-exit.md): per text,
    /// the log-likelihood of its tokens (each predicted from its prefix in its window; the text is framed by the core's
    /// start rule, <see cref="LoopRpt.Tokenization.TextCodec.EncodePrompt"/>, so its first token is predicted from the start id), perplexity, and the 1-indexed exit step and log-probability of every scored token. Texts
    /// longer than the context are scored in windows overlapping by one token, never truncated.
    /// </summary>
    private static async Task Score(HttpContext http, JsonObject body, LoopRptServerOptions server, CancellationToken ct)
    {
        var source = http.RequestServices.GetRequiredService<ILoopRptModelSource>();
        var inputs = RequestReader.Strings(body, "input", server.MaxInputs);
        double? q = RequestReader.ExitThreshold(body);
        var payload = await Task.Run(() =>
        {
            using var lease = source.Acquire();
            var rows = inputs.Select((t, i) => string.IsNullOrEmpty(t)
                ? throw ApiError.BadRequest($"input[{i}] is empty.", "input")
                : (IReadOnlyList<int>)lease.Codec.EncodePrompt(t)).ToList();
            ct.ThrowIfCancellationRequested();
            var scores = new DocumentScorer(lease.Model, new DocumentScorerOptions { Exit = q is { } x ? ExitMode.Q(x) : null }).Score(rows);
            static double? Finite(double v) => double.IsFinite(v) ? v : null;
            var data = scores.Select((s, i) => new
            {
                @object = "score",
                index = i,
                tokens = s.Tokens,
                log_likelihood = s.LogLikelihood,
                perplexity = Finite(s.Perplexity),
                mean_exit_step = Finite(s.MeanExitStep),
                exit_steps = s.ExitSteps.Select(e => (int)e).ToArray(),
                token_log_probs = s.TokenLogProbabilities.Select(v => (double)v).ToArray(),
            }).ToList();
            return new
            {
                @object = "list",
                data,
                model = source.ModelId,
                system_fingerprint = Fingerprint(lease.Version),
                usage = new { prompt_tokens = rows.Sum(r => r.Count), total_tokens = rows.Sum(r => r.Count), loops = ScoreTotals.Of(scores).LoopsSpent },
            };
        }, ct);
        await http.Response.WriteAsJsonAsync(payload, Json, ct);
    }

    private static string Fingerprint(int version) => "looprpt-v" + version;

    /// <summary>The fingerprint of a reply's model version; null when the response no longer says (see <see cref="LoopRptUsage"/>).</summary>
    private static string? Fingerprint(LoopRptUsage usage) => usage.ModelVersion is { } v ? Fingerprint(v) : null;

    private static string Finish(ChatFinishReason? finish) => finish == ChatFinishReason.Length ? "length" : "stop";

    private static object Usage(LoopRptUsage u) => new
    {
        prompt_tokens = u.PromptTokens,
        completion_tokens = u.OutputTokens,
        total_tokens = u.PromptTokens + u.OutputTokens,
        loops = u.Loops,
        mean_loops = u.OutputTokens == 0 ? 0 : u.MeanLoops,
    };
}

/// <summary>Counts requests in flight against <see cref="LoopRptServerOptions.MaxConcurrentRequests"/>.</summary>
internal sealed class RequestGate(IOptions<LoopRptServerOptions> options)
{
    private int _inFlight;

    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _inFlight) <= options.Value.MaxConcurrentRequests) return true;
        Interlocked.Decrement(ref _inFlight);
        return false;
    }

    public void Exit() => Interlocked.Decrement(ref _inFlight);
}
