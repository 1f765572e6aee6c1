using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Server;
using LoopRpt.Tests.AI;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;
using OaiChatMessage = OpenAI.Chat.ChatMessage;

namespace LoopRpt.Tests.Server;

[Collection(nameof(ServerCollection))]
public class OpenAIServerTests
{
    private static string GreedyText(LoopRptModel model, IEnumerable<AIChatMessage> messages, int maxTokens, out int tokens)
    {
        var prompt = ChatTemplate.Render(messages, model.Codec, ChatTemplateKind.Auto);
        var reply = new LoopedGenerator(model.Model).Generate(prompt.Ids, new GenerationOptions { MaxNewTokens = maxTokens, Temperature = 0, StopTokens = [LettersTokenizer.EndOfText] });
        tokens = reply.Tokens.Length;
        return model.Codec.Decode(reply.Tokens.Where(t => t != LettersTokenizer.EndOfText).Select(t => (int)t));
    }

    [Fact]
    public async Task OfficialClientChatsStreamsAndListsModels()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var chat = server.OpenAI.GetChatClient("tiny-test");
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 9 };
        OaiChatMessage[] messages = [new SystemChatMessage("be brief"), new UserChatMessage("hello there")];
        var expected = GreedyText(model, [new(ChatRole.System, "be brief"), new(ChatRole.User, "hello there")], 9, out int tokens);

        ChatCompletion completion = await chat.CompleteChatAsync(messages, options);
        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(tokens, completion.Usage.OutputTokenCount);
        Assert.Equal("looprpt-v1", completion.SystemFingerprint);
        Assert.Equal(tokens == 9 ? OpenAI.Chat.ChatFinishReason.Length : OpenAI.Chat.ChatFinishReason.Stop, completion.FinishReason);

        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        int updates = 0;
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, options))
        {
            updates++;
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            usage ??= u.Usage;
        }
        Assert.Equal(expected, text.ToString());
        Assert.True(updates >= 3);
        Assert.Equal(tokens, usage?.OutputTokenCount);

        var models = (await server.OpenAI.GetOpenAIModelClient().GetModelsAsync()).Value;
        Assert.Equal("tiny-test", Assert.Single(models).Id);
        var health = JsonDocument.Parse(await server.Http.GetStringAsync("/healthz")).RootElement;
        Assert.Equal("ok", health.GetProperty("status").GetString());
    }

    [Fact]
    public async Task MicrosoftExtensionsAIOpenAIClientsWorkAgainstTheServer()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        IChatClient chat = server.OpenAI.GetChatClient("tiny-test").AsIChatClient();
        AIChatMessage[] messages = [new(ChatRole.User, "abc")];
        var expected = GreedyText(model, messages, 6, out _);
        var response = await chat.GetResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = 6 });
        Assert.Equal(expected, response.Text);
        var streamed = await chat.GetStreamingResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = 6 }).ToChatResponseAsync();
        Assert.Equal(expected, streamed.Text);

        // Embeddings through the OpenAI client (base64 on the wire) equal the in-process generator's vectors.
        var remote = server.OpenAI.GetEmbeddingClient("tiny-test").AsIEmbeddingGenerator();
        string[] texts = ["hello world", "loop"];
        var got = await remote.GenerateAsync(texts);
        using var local = new LoopRptEmbeddingGenerator(model);
        var want = await local.GenerateAsync(texts);
        for (int i = 0; i < texts.Length; i++) Tolerance.AssertClose(want[i].Vector.ToArray(), got[i].Vector.ToArray(), $"text {i}");
    }

    [Fact]
    public async Task CompletionsStreamAsServerSentEvents()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var reply = new LoopedGenerator(model.Model).Generate(model.Codec.Ids("abc"), new GenerationOptions { MaxNewTokens = 7, Temperature = 0, StopTokens = [LettersTokenizer.EndOfText] });
        var expected = model.Codec.Decode(reply.Tokens.Where(t => t != LettersTokenizer.EndOfText).Select(t => (int)t));

        var plain = await Post(server, "/v1/completions", """{"model":"tiny-test","prompt":"abc","max_tokens":7,"temperature":0}""");
        Assert.Equal(HttpStatusCode.OK, plain.Status);
        Assert.Equal(expected, plain.Json.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(reply.LoopsUsed.Sum(), plain.Json.GetProperty("usage").GetProperty("loops").GetInt64());

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"prompt":"abc","max_tokens":7,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""", Encoding.UTF8, "application/json"),
        };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).ToList();
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        Assert.Equal(expected, string.Concat(chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray()).Select(c => c.GetProperty("text").GetString())));
        Assert.Equal(reply.Tokens.Length, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task ScoreEndpointGivesLogLikelihoodPerplexityAndExits()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var r = await Post(server, "/v1/score", """{"input":["abcd","hello"],"exit_threshold":1}""");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var data = r.Json.GetProperty("data");
        foreach (var (text, i) in new[] { ("abcd", 0), ("hello", 1) })
        {
            // Independent: full-depth forward, log-softmax of the last loop, each next token's log-probability.
            var ids = model.Codec.Ids(text);
            double ll = 0;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var logp = F.log_softmax(model.Model.Logits(model.Model.Forward(tensor(ids, [1, ids.Length])).Hidden[^1]), -1)[0];
                for (int j = 0; j + 1 < ids.Length; j++) ll += logp[j, ids[j + 1]].item<float>();
            }
            var row = data[i];
            Tolerance.AssertClose(ll, row.GetProperty("log_likelihood").GetDouble(), absolute: 1e-4);
            Tolerance.AssertClose(Math.Exp(-ll / (ids.Length - 1)), row.GetProperty("perplexity").GetDouble(), absolute: 1e-4);
            Assert.All(row.GetProperty("exit_steps").EnumerateArray(), s => Assert.Equal(4, s.GetInt32()));
        }
    }

    [Fact]
    public async Task BadRequestsGetOpenAIShapedErrors()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model, new LoopRptServerOptions { MaxTokens = 50, MaxRequestBodyBytes = 4096 });
        var chat = server.OpenAI.GetChatClient("tiny-test");
        var tooMany = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 51 }));
        Assert.Equal(400, tooMany.Status);
        Assert.Contains("exceeds this server's limit of 50", tooMany.Message);
        var unknown = await Assert.ThrowsAsync<ClientResultException>(() => server.OpenAI.GetChatClient("gpt-4o").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, unknown.Status);

        async Task Expect(string path, string body, HttpStatusCode status, string? param, string fragment)
        {
            var r = await Post(server, path, body);
            Assert.Equal(status, r.Status);
            var error = r.Json.GetProperty("error");
            Assert.Contains(fragment, error.GetProperty("message").GetString());
            Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));
            if (param is not null) Assert.Equal(param, error.GetProperty("param").GetString());
        }
        await Expect("/v1/chat/completions", "{not json", HttpStatusCode.BadRequest, null, "not valid JSON");
        await Expect("/v1/chat/completions", """{"messages":[]}""", HttpStatusCode.BadRequest, "messages", "non-empty array");
        await Expect("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"n":17}""", HttpStatusCode.BadRequest, "n", "n must lie in [1, 16]");
        await Expect("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"exit_threshold":1.5}""", HttpStatusCode.BadRequest, "exit_threshold", "exit_threshold");
        await Expect("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"temperature":-1}""", HttpStatusCode.BadRequest, "temperature", "temperature must be");
        await Expect("/v1/embeddings", """{"input":"abc","dimensions":7}""", HttpStatusCode.BadRequest, "dimensions", "32 dimensions");
        await Expect("/v1/embeddings", """{"input":[1,2,3]}""", HttpStatusCode.BadRequest, "input", "token arrays are not supported");
        await Expect("/v1/completions", "{\"prompt\":\"" + new string('a', 5000) + "\"}", HttpStatusCode.RequestEntityTooLarge, null, "4096");
        var missing = await server.Http.GetAsync("/v1/nothing");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        // The server still answers after the errors.
        Assert.Equal(HttpStatusCode.OK, (await Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":2}""")).Status);
    }

    [Fact]
    public async Task ARequestOverTheTimeoutIsCancelledWith408()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model, new LoopRptServerOptions { RequestTimeoutSeconds = 0.001, MaxTokens = 240 });
        var r = await Post(server, "/v1/completions", """{"prompt":"a","max_tokens":240,"temperature":0}""");
        Assert.Equal(HttpStatusCode.RequestTimeout, r.Status);
        Assert.Equal("timeout_error", r.Json.GetProperty("error").GetProperty("type").GetString());
    }

    internal static async Task<(HttpStatusCode Status, JsonElement Json)> Post(LoopbackServer server, string path, string body)
    {
        using var response = await server.Http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }
}
