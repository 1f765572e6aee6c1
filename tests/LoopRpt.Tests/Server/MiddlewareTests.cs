using System.Net;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Server;
using LoopRpt.Tests.AI;
using LoopRpt.Tests.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace LoopRpt.Tests.Server;

/// <summary>
/// The server is a face over the <see cref="IChatClient"/> and <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> in
/// DI: middleware a host registers sees every request, and what the server reports survives middleware.
/// </summary>
[Collection(nameof(ServerCollection))]
public class MiddlewareTests
{
    private const string ChatBody = """{"messages":[{"role":"user","content":"abc"}],"max_tokens":6,"temperature":0,"exit_threshold":0.5}""";
    private const string CompletionBody = """{"prompt":"abc","max_tokens":7,"temperature":0,"exit_threshold":0.5}""";

    /// <summary>Counts the calls that reach it and keeps the options they carried.</summary>
    private sealed class CountingChatClient(IChatClient inner) : DelegatingChatClient(inner)
    {
        public int Responses;
        public int Streams;
        public List<ChatOptions?> Options { get; } = [];

        public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref Responses);
            lock (Options) Options.Add(options);
            return base.GetResponseAsync(messages, options, cancellationToken);
        }

        public override IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref Streams);
            lock (Options) Options.Add(options);
            return base.GetStreamingResponseAsync(messages, options, cancellationToken);
        }
    }

    private sealed class CountingEmbeddingGenerator(IEmbeddingGenerator<string, Embedding<float>> inner) : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
    {
        public int Calls;

        public override Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref Calls);
            return base.GenerateAsync(values, options, cancellationToken);
        }
    }

    /// <summary>The library generator's greedy reply to <paramref name="prompt"/> at q = 0.5: the independent reference.</summary>
    private static (string Text, GeneratedSequence Reply) Reference(LoopRptModel model, long[] prompt, int maxTokens)
    {
        var reply = new LoopedGenerator(model.Model).Generate(prompt, new GenerationOptions
        {
            MaxNewTokens = maxTokens, Temperature = 0, Exit = ExitMode.Q(0.5), StopTokens = [LettersTokenizer.EndOfText],
        });
        return (model.Codec.Decode(reply.Tokens.Where(t => t != LettersTokenizer.EndOfText).Select(t => (int)t)), reply);
    }

    private static (string Text, GeneratedSequence Reply) ChatReference(LoopRptModel model)
        => Reference(model, ChatTemplate.Render([new ChatMessage(ChatRole.User, "abc")], model.Codec, ChatTemplateKind.Auto).Ids, 6);

    private static (string Text, GeneratedSequence Reply) CompletionReference(LoopRptModel model) => Reference(model, model.Codec.Ids("abc"), 7);

    /// <summary>A streamed reply: its text, the last chunk's fingerprint and the usage chunk.</summary>
    private static async Task<(string Text, string? Fingerprint, JsonElement Usage)> PostStream(LoopbackServer server, string path, string body)
    {
        var streamed = body[..^1] + ""","stream":true,"stream_options":{"include_usage":true}}""";
        using var response = await server.Http.PostAsync(path, new StringContent(streamed, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
        var text = string.Concat(chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray()).Select(c =>
            c.TryGetProperty("delta", out var d) ? d.TryGetProperty("content", out var t) ? t.GetString() : "" : c.GetProperty("text").GetString()));
        return (text, chunks[^1].GetProperty("system_fingerprint").GetString(), chunks[^1].GetProperty("usage").Clone());
    }

    private static string ChoiceText(JsonElement json)
    {
        var choice = json.GetProperty("choices")[0];
        return choice.TryGetProperty("message", out var m) ? m.GetProperty("content").GetString()! : choice.GetProperty("text").GetString()!;
    }

    [Fact]
    public async Task HostMiddlewareSeesEveryChatCompletionAndEmbeddingRequest()
    {
        using var model = AiTestSupport.Model();
        CountingChatClient? chat = null;
        CountingEmbeddingGenerator? embeddings = null;
        await using var server = await LoopbackServer.StartAsync(model, configureServices: s =>
        {
            s.AddChatClient(sp => new LoopRptChatClient(sp.GetRequiredService<ILoopRptModelSource>())).Use(inner => chat = new CountingChatClient(inner));
            s.AddEmbeddingGenerator(sp => new LoopRptEmbeddingGenerator(sp.GetRequiredService<ILoopRptModelSource>()))
                .Use(inner => embeddings = new CountingEmbeddingGenerator(inner));
        });
        var (chatText, chatReply) = ChatReference(model);
        var (completionText, completionReply) = CompletionReference(model);

        var r = await OpenAIServerTests.Post(server, "/v1/chat/completions", ChatBody);
        Assert.Equal(HttpStatusCode.OK, r.Status);
        Assert.Equal(chatText, ChoiceText(r.Json));
        Assert.Equal("looprpt-v1", r.Json.GetProperty("system_fingerprint").GetString());
        Assert.Equal(chatReply.LoopsUsed.Sum(), r.Json.GetProperty("usage").GetProperty("loops").GetInt64());
        var s = await PostStream(server, "/v1/chat/completions", ChatBody);
        Assert.Equal(chatText, s.Text);
        Assert.Equal("looprpt-v1", s.Fingerprint);
        Assert.Equal(chatReply.LoopsUsed.Sum(), s.Usage.GetProperty("loops").GetInt64());

        r = await OpenAIServerTests.Post(server, "/v1/completions", CompletionBody);
        Assert.Equal(completionText, ChoiceText(r.Json));
        Assert.Equal(completionReply.Tokens.Length, r.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(4, r.Json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());      // start id + "abc", no template (DocumentTokens: the end-of-text id starts a prompt)
        s = await PostStream(server, "/v1/completions", CompletionBody);
        Assert.Equal(completionText, s.Text);
        Assert.Equal(completionReply.LoopsUsed.Sum(), s.Usage.GetProperty("loops").GetInt64());

        r = await OpenAIServerTests.Post(server, "/v1/embeddings", """{"input":["hello world","loop"],"exit_threshold":0.5}""");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        using var local = new LoopRptEmbeddingGenerator(model);
        var want = await local.GenerateAsync(["hello world", "loop"], new EmbeddingGenerationOptions { AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.5 } });
        for (int i = 0; i < 2; i++)                                                              // the server's generator and a local one: two paths
            Tolerance.AssertClose(want[i].Vector.ToArray(), r.Json.GetProperty("data")[i].GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray(), $"text {i}");

        Assert.Equal(2, chat!.Responses);
        Assert.Equal(2, chat.Streams);
        Assert.Equal(1, embeddings!.Calls);
        // The completions requests asked for a plain prompt; the chat requests did not. Every request carried its q.
        Assert.Equal([false, false, true, true], chat.Options.Select(o => o!.AdditionalProperties!.ContainsKey(LoopRptChatClient.RawPromptKey)));
        Assert.All(chat.Options, o => Assert.Equal(0.5, o!.AdditionalProperties![LoopRptChatClient.ExitThresholdKey]));
    }

    [Fact]
    public async Task TheServerWorksThroughTheStandardLoggingMiddleware()
    {
        using var model = AiTestSupport.Model();
        var logs = new ListLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Trace));
        await using var server = await LoopbackServer.StartAsync(model, configureServices: s =>
        {
            s.AddLoopRptChatClient().UseLogging(factory);
            s.AddLoopRptEmbeddingGenerator().UseLogging(factory);
        });
        var (chatText, _) = ChatReference(model);
        var (completionText, _) = CompletionReference(model);

        var r = await OpenAIServerTests.Post(server, "/v1/chat/completions", ChatBody);
        Assert.Equal(chatText, ChoiceText(r.Json));
        Assert.Equal("looprpt-v1", r.Json.GetProperty("system_fingerprint").GetString());
        Assert.Equal(chatText, (await PostStream(server, "/v1/chat/completions", ChatBody)).Text);
        Assert.Equal(completionText, ChoiceText((await OpenAIServerTests.Post(server, "/v1/completions", CompletionBody)).Json));
        Assert.Equal(completionText, (await PostStream(server, "/v1/completions", CompletionBody)).Text);
        Assert.Equal(HttpStatusCode.OK, (await OpenAIServerTests.Post(server, "/v1/embeddings", """{"input":"abc"}""")).Status);

        var messages = logs.Entries.Select(e => e.Message).ToList();
        Assert.Equal(2, messages.Count(m => m.StartsWith("GetResponseAsync invoked", StringComparison.Ordinal)));
        Assert.Equal(2, messages.Count(m => m.StartsWith("GetStreamingResponseAsync invoked", StringComparison.Ordinal)));
        Assert.Equal(1, messages.Count(m => m.StartsWith("GenerateAsync invoked", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task ACacheThatDropsRawRepresentationStillGivesTheSameAnswers()
    {
        using var model = AiTestSupport.Model();
        CountingChatClient? inner = null;
        var cache = new MemoryDistributedCache(Options.Create(new MemoryDistributedCacheOptions()));
        await using var server = await LoopbackServer.StartAsync(model, configureServices: s =>
            s.AddChatClient(sp => new LoopRptChatClient(sp.GetRequiredService<ILoopRptModelSource>()))
                .UseDistributedCache(cache)
                .Use(c => inner = new CountingChatClient(c)));

        foreach (var (path, body) in new[] { ("/v1/chat/completions", ChatBody), ("/v1/completions", CompletionBody) })
        {
            var first = await OpenAIServerTests.Post(server, path, body);
            var second = await OpenAIServerTests.Post(server, path, body);               // from the cache: JSON, no RawRepresentation
            Assert.Equal(ChoiceText(first.Json), ChoiceText(second.Json));
            Assert.Equal("looprpt-v1", second.Json.GetProperty("system_fingerprint").GetString());
            Assert.Equal(first.Json.GetProperty("usage").GetRawText(), second.Json.GetProperty("usage").GetRawText());

            var firstStream = await PostStream(server, path, body);
            var secondStream = await PostStream(server, path, body);
            Assert.Equal(firstStream.Text, secondStream.Text);
            Assert.Equal(ChoiceText(first.Json), secondStream.Text);
            Assert.Equal(firstStream.Fingerprint, secondStream.Fingerprint);
            Assert.Equal(firstStream.Usage.GetRawText(), secondStream.Usage.GetRawText());
        }
        Assert.Equal(2, inner!.Responses);                                                  // the second of each pair never reached LoopRpt
        Assert.Equal(2, inner.Streams);
    }

    [Fact]
    public async Task TheServerRegistersLoopRptsClientsOnlyWhenTheHostHasNone()
    {
        using var model = AiTestSupport.Model();
        var services = new ServiceCollection().AddSingleton<ILoopRptModelSource>(model);
        services.AddLoopRptServer(new LoopRptServerOptions());
        Assert.Single(services, d => d.ServiceType == typeof(IChatClient));
        Assert.Single(services, d => d.ServiceType == typeof(IEmbeddingGenerator<string, Embedding<float>>));
        await using (var provider = services.BuildServiceProvider())
        {
            Assert.NotNull(provider.GetRequiredService<IChatClient>().GetService<LoopRptChatClient>());
            Assert.NotNull(provider.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>().GetService<LoopRptEmbeddingGenerator>());
            // /v1/score scores through the core scorer and needs no generator: none is registered beside the pipeline.
            Assert.Null(provider.GetService<LoopRptEmbeddingGenerator>());
        }

        var hosted = new ServiceCollection().AddSingleton<ILoopRptModelSource>(model);
        CountingChatClient? counting = null;
        hosted.AddChatClient(sp => new LoopRptChatClient(sp.GetRequiredService<ILoopRptModelSource>())).Use(c => counting = new CountingChatClient(c));
        hosted.AddLoopRptServer(new LoopRptServerOptions());
        Assert.Single(hosted, d => d.ServiceType == typeof(IChatClient));
        await using (var provider = hosted.BuildServiceProvider())
        {
            var resolved = provider.GetRequiredService<IChatClient>();
            Assert.Same(counting, resolved);
        }
    }

    [Fact]
    public void NoInternalsOfTheAIAssemblyAreVisibleToTheServer()
    {
        var friends = typeof(LoopRptChatClient).Assembly.GetCustomAttributes<InternalsVisibleToAttribute>().Select(a => a.AssemblyName.Split(',')[0].Trim()).ToList();
        Assert.Contains("LoopRpt.Tests", friends);                                           // the attributes are really read
        Assert.DoesNotContain(typeof(LoopRptServer).Assembly.GetName().Name, friends);
    }
}
