using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace LoopRpt.Tests.AI;

public class ChatClientTests
{
    private static readonly ChatMessage[] Conversation = [new(ChatRole.System, "be brief"), new(ChatRole.User, "hello there")];

    /// <summary>The library generator's result for the same rendered prompt: the independent reference.</summary>
    private static (long[] Prompt, GeneratedSequence Reply) Reference(LoopRptModel model, IEnumerable<ChatMessage> messages, int maxTokens,
        double temperature = 0, double? q = null, ulong seed = 0)
    {
        var prompt = ChatTemplate.Render(messages, model.Codec, ChatTemplateKind.Auto);
        var reply = new LoopedGenerator(model.Model).Generate(prompt.Ids, new GenerationOptions
        {
            MaxNewTokens = maxTokens, Temperature = temperature, Seed = seed, Exit = q is { } x ? ExitMode.Q(x) : null,
            StopTokens = [LettersTokenizer.EndOfText],
        });
        return (prompt.Ids, reply);
    }

    [Fact]
    public async Task GreedyReplyIsTheGeneratorsGreedyOutputWithUsageAndLoops()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10, AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.1 } };
        var response = await client.GetResponseAsync(Conversation, options);

        var (prompt, expected) = Reference(model, Conversation, 10, q: 0.1);
        var raw = Assert.IsType<LoopRptGeneration>(response.RawRepresentation);
        Assert.Equal(expected.Tokens, raw.Tokens);
        Assert.Equal(expected.LoopsUsed, raw.LoopsUsed);
        Assert.Contains(raw.LoopsUsed, l => l < 4);                               // the threshold really shortened some tokens
        Assert.Equal(model.Codec.Decode(expected.Tokens.Where(t => t != LettersTokenizer.EndOfText).Select(t => (int)t)), response.Text);
        Assert.Equal(prompt.Length, response.Usage!.InputTokenCount);
        Assert.Equal(expected.Tokens.Length, response.Usage.OutputTokenCount);
        Assert.Equal(prompt.Length + expected.Tokens.Length, response.Usage.TotalTokenCount);
        Assert.Equal(expected.LoopsUsed.Sum(), response.Usage.AdditionalCounts![LoopRptChatClient.LoopsKey]);
        Assert.Equal(expected.FinishReason == FinishReason.Stop ? ChatFinishReason.Stop : ChatFinishReason.Length, response.FinishReason);
        Assert.Equal("tiny-test", response.ModelId);
    }

    [Fact]
    public async Task FullDepthSpendsEveryLoopOnEveryToken()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 0, ExitThreshold = 1.0 });
        var response = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 6 });
        long outputTokens = response.Usage!.OutputTokenCount!.Value;
        Assert.Equal(4 * outputTokens, response.Usage.AdditionalCounts![LoopRptChatClient.LoopsKey]);   // 4 loops × tokens
    }

    [Fact]
    public async Task StreamingYieldsTheSameTextAsOneResponseAndEndsWithUsage()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 12 };
        var whole = await client.GetResponseAsync(Conversation, options);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Conversation, options)) updates.Add(u);

        Assert.True(updates.Count >= 3, $"expected token-by-token updates, got {updates.Count}");
        Assert.Equal(whole.Text, string.Concat(updates.Select(u => u.Text)));
        var usage = Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.Equal(whole.Usage!.OutputTokenCount, usage.Details.OutputTokenCount);
        Assert.Equal(whole.Usage.AdditionalCounts![LoopRptChatClient.LoopsKey], usage.Details.AdditionalCounts![LoopRptChatClient.LoopsKey]);
        Assert.Equal(whole.FinishReason, updates[^1].FinishReason);
        var combined = updates.ToChatResponse();
        Assert.Equal(whole.Text, combined.Text);
    }

    [Fact]
    public async Task StopSequenceEndsTheReplyBeforeIt()
    {
        using var model = AiTestSupport.Model();
        // Seeded sampling: a varied reply (the tiny model's greedy reply repeats one letter), the same on every call.
        // The first seed (fixed: the search is deterministic) whose reply is long enough to cut.
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 1 });
        ChatResponse free = null!;
        long seed = 0;
        for (; seed < 50; seed++)
            if ((free = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, Seed = seed })).Text.Length >= 6) break;
        Assert.True(free.Text.Length >= 6, $"the tiny model's reply '{free.Text}' is too short for this test");
        var stop = free.Text.Substring(3, 2);
        var cut = free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)];
        Assert.NotEqual(free.Text, cut);

        var stopped = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, Seed = seed, StopSequences = [stop] });
        Assert.Equal(cut, stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
        Assert.True(stopped.Usage!.OutputTokenCount < free.Usage!.OutputTokenCount);   // generation really ended early

        var streamed = new List<string>();
        await foreach (var u in client.GetStreamingResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, Seed = seed, StopSequences = [stop] }))
            streamed.Add(u.Text);
        Assert.Equal(cut, string.Concat(streamed));                                // no part of the stop string leaks out
    }

    [Fact]
    public async Task SeededSamplingIsReproducibleAndMatchesTheGenerator()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model);
        var options = new ChatOptions { Temperature = 1.0f, TopP = 0.9f, Seed = 7, MaxOutputTokens = 10 };
        var a = await client.GetResponseAsync(Conversation, options);
        var b = await client.GetResponseAsync(Conversation, options);
        var expected = new LoopedGenerator(model.Model).Generate(ChatTemplate.Render(Conversation, model.Codec, ChatTemplateKind.Auto).Ids,
            new GenerationOptions { MaxNewTokens = 10, Temperature = 1.0, TopP = (double)0.9f, Seed = 7, StopTokens = [LettersTokenizer.EndOfText] });
        Assert.Equal(expected.Tokens, ((LoopRptGeneration)a.RawRepresentation!).Tokens);
        Assert.Equal(a.Text, b.Text);
        var other = await client.GetResponseAsync(Conversation, new ChatOptions { Temperature = 1.0f, TopP = 0.9f, Seed = 8, MaxOutputTokens = 10 });
        Assert.NotEqual(((LoopRptGeneration)a.RawRepresentation!).Tokens, ((LoopRptGeneration)other.RawRepresentation!).Tokens);
    }

    [Fact]
    public async Task ConcurrentCallersGetWhatEachGetsAlone()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 0, BatchSize = 3 });
        var prompts = Enumerable.Range(0, 6).Select(i => new[] { new ChatMessage(ChatRole.User, new string('a', i + 1) + " q" + i) }).ToArray();
        var budgets = new[] { 3, 9, 5, 12, 1, 7 };
        var tasks = prompts.Select((p, i) => client.GetResponseAsync(p, new ChatOptions { MaxOutputTokens = budgets[i], AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.5 } })).ToArray();
        var responses = await Task.WhenAll(tasks);
        for (int i = 0; i < prompts.Length; i++)
        {
            var (_, alone) = Reference(model, prompts[i], budgets[i], q: 0.5);
            Assert.Equal(alone.Tokens, ((LoopRptGeneration)responses[i].RawRepresentation!).Tokens);
            Assert.True(responses[i].Usage!.OutputTokenCount <= budgets[i]);
        }
    }

    [Fact]
    public async Task BadOptionsFailWithSpecificErrors()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model);
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync(Conversation, new ChatOptions { Temperature = -1 }));
        Assert.Contains("Temperature", e.Message);
        e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync(Conversation,
            new ChatOptions { AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 1.5 } }));
        Assert.Contains("exit_threshold", e.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Conversation,
            new ChatOptions { AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = "deep" } }));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(Conversation,
            new ChatOptions { Tools = [AIFunctionFactory.Create(() => 1, "one")] }));
        // 256 positions in the tiny model: a long prompt plus the budget does not fit.
        e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, new string('x', 250))],
            new ChatOptions { MaxOutputTokens = 10 }));
        Assert.Contains("max_position_embeddings", e.Message);
        // The client still serves after failed requests.
        Assert.NotNull((await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 2 })).Usage);
    }

    [Fact]
    public async Task CancellingAStreamStopsItAndLeavesTheClientServing()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 0 });
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.GetStreamingResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 200 }, cts.Token))
            {
                seen++;
                cts.Cancel();
            }
        });
        Assert.Equal(1, seen);
        var after = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 3 });
        Assert.InRange(after.Usage!.OutputTokenCount!.Value, 1, 3);
    }

    [Fact]
    public async Task RegistrationComposesWithTheMicrosoftExtensionsAIPipeline()
    {
        var services = new ServiceCollection();
        services.AddSingleton<ILoopRptModelSource>(_ => AiTestSupport.Model());
        // ConfigureOptions is Microsoft.Extensions.AI middleware: it caps every request at 4 tokens.
        services.AddLoopRptChatClient(o => o.Temperature = 0).ConfigureOptions(o => o.MaxOutputTokens = 4);
        services.AddLoopRptEmbeddingGenerator();
        await using var provider = services.BuildServiceProvider();
        var chat = provider.GetRequiredService<IChatClient>();
        var response = await chat.GetResponseAsync(Conversation);
        Assert.True(response.Usage!.OutputTokenCount <= 4);
        Assert.Equal("looprpt", chat.GetService<ChatClientMetadata>()!.ProviderName);
        var embedder = provider.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
        var vector = await embedder.GenerateVectorAsync("abc");
        Assert.Equal(32, vector.Length);
    }

    [Fact]
    public async Task RawPromptIsEncodedAsIsWithoutTheChatTemplate()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 7, AdditionalProperties = new() { [LoopRptChatClient.RawPromptKey] = true } };
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "ab"), new ChatMessage(ChatRole.User, "c")], options);
        // The reference: the library generator on the prompt's ids framed by the core's start rule, no template.
        var expected = new LoopedGenerator(model.Model).Generate(model.Codec.Ids("abc"), new GenerationOptions
        {
            MaxNewTokens = 7, Temperature = 0, StopTokens = [LettersTokenizer.EndOfText],
        });
        var raw = Assert.IsType<LoopRptGeneration>(response.RawRepresentation);
        Assert.Equal(expected.Tokens, raw.Tokens);
        Assert.Equal(4, response.Usage!.InputTokenCount);                                    // start id + "abc"
        var templated = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "abc")], new ChatOptions { Temperature = 0, MaxOutputTokens = 7 });
        Assert.True(templated.Usage!.InputTokenCount > 4);                                 // without the key the template applies

        // An empty prompt is the start id alone (DocumentTokens), so the model continues from the start of a document.
        var empty = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "")], options);
        Assert.Equal(1, empty.Usage!.InputTokenCount);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Conversation,
            new ChatOptions { AdditionalProperties = new() { [LoopRptChatClient.RawPromptKey] = 3 } }));
    }

    [Fact]
    public async Task KvCacheModeIsARequestOption()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 0 });
        var prompt = ChatTemplate.Render(Conversation, model.Codec, ChatTemplateKind.Auto).Ids;
        GeneratedSequence Reference(KvCacheMode mode) => new LoopedGenerator(model.Model).Generate(prompt, new GenerationOptions
        {
            MaxNewTokens = 16, Temperature = 0, Exit = ExitMode.Q(0.3), KvCache = mode, StopTokens = [LettersTokenizer.EndOfText],
        });
        var lastLoop = Reference(KvCacheMode.LastLoop);
        Assert.NotEqual(Reference(KvCacheMode.PerLoop).LoopsUsed, lastLoop.LoopsUsed);    // the two rules really differ here
        foreach (object value in new object[] { KvCacheMode.LastLoop, "lastloop" })
        {
            var response = await client.GetResponseAsync(Conversation, new ChatOptions
            {
                MaxOutputTokens = 16,
                AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.3, [LoopRptChatClient.KvCacheKey] = value },
            });
            var raw = Assert.IsType<LoopRptGeneration>(response.RawRepresentation);
            Assert.Equal(lastLoop.Tokens, raw.Tokens);
            Assert.Equal(lastLoop.LoopsUsed, raw.LoopsUsed);
        }
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Conversation,
            new ChatOptions { AdditionalProperties = new() { [LoopRptChatClient.KvCacheKey] = "sometimes" } }));
        Assert.Contains(LoopRptChatClient.KvCacheKey, e.Message);
    }

    [Fact]
    public async Task UsageReadsTheSameFromRawRepresentationAndFromASerializedResponse()
    {
        using var model = AiTestSupport.Model();
        using var client = new LoopRptChatClient(model, new LoopRptChatClientOptions { Temperature = 0 });
        var options = new ChatOptions { MaxOutputTokens = 9, AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.4 } };
        var response = await client.GetResponseAsync(Conversation, options);
        var raw = Assert.IsType<LoopRptGeneration>(response.RawRepresentation);
        var fromRaw = LoopRptUsage.From(response);
        // bitwise: counts, and the same Average over the same loop list
        Assert.Equal(new LoopRptUsage(raw.PromptTokens, raw.Tokens.Length, raw.LoopsUsed.Sum(), raw.LoopsUsed.Average(), 1), fromRaw);

        // A response rebuilt from JSON (as a distributed cache does) has no RawRepresentation and JsonElement properties;
        // the same numbers come back exactly (JSON writes doubles in round-trip form).
        var copy = System.Text.Json.JsonSerializer.Deserialize<ChatResponse>(
            System.Text.Json.JsonSerializer.Serialize(response, AIJsonUtilities.DefaultOptions), AIJsonUtilities.DefaultOptions)!;
        Assert.Null(copy.RawRepresentation);
        Assert.Equal(fromRaw, LoopRptUsage.From(copy));                                  // bitwise: JSON writes doubles in round-trip form

        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Conversation, options)) updates.Add(u);
        Assert.Equal(fromRaw, LoopRptUsage.From(updates));                               // bitwise: the same generation's numbers read back
        var stripped = updates.Select(u => System.Text.Json.JsonSerializer.Deserialize<ChatResponseUpdate>(
            System.Text.Json.JsonSerializer.Serialize(u, AIJsonUtilities.DefaultOptions), AIJsonUtilities.DefaultOptions)!).ToList();
        Assert.All(stripped, u => Assert.Null(u.RawRepresentation));
        Assert.Equal(fromRaw, LoopRptUsage.From(stripped));                              // bitwise: JSON writes doubles in round-trip form
    }
}
