using System.Net;
using System.Text;
using System.Text.Json;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tests.AI;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using static LoopRpt.Tests.Server.OpenAIServerTests;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace LoopRpt.Tests.Server;

/// <summary>n, logprobs / top_logprobs (chat) and logprobs / echo (completions), checked against independent computations.</summary>
[Collection(nameof(ServerCollection))]
public class OpenAIFieldsTests
{
    private const string Hello = """[{"role":"user","content":"hello there"}]""";

    /// <summary>Teacher-forced scoring of <paramref name="ids"/> at exit threshold <paramref name="q"/>: log-probability and exit of every token after the first.</summary>
    private static ScoredDocument Scored(LoopRptModel model, IEnumerable<long> ids, double q)
        => new DocumentScorer(model.Model, new DocumentScorerOptions { Exit = ExitMode.Q(q) }).Score(ids.Select(i => (int)i).ToArray());

    private static async Task<List<JsonElement>> Events(LoopbackServer server, string path, string body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).ToList();
        Assert.Equal("data: [DONE]", events[^1]);
        return events.SkipLast(1).Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
    }

    private static void CheckTop(JsonElement entry, double logprob, string token, int count)
    {
        var top = entry.GetProperty("top_logprobs").EnumerateArray().ToList();
        Assert.Equal(count, top.Count);
        var values = top.Select(t => t.GetProperty("logprob").GetDouble()).ToList();
        for (int a = 1; a < values.Count; a++) Assert.True(values[a - 1] >= values[a], "top_logprobs sorted, most likely first");
        Assert.True(values.Sum(Math.Exp) <= 1 + 1e-5);
        if (logprob >= values[^1] + 1e-6) Assert.Contains(token, top.Select(t => t.GetProperty("token").GetString()));
        Assert.All(top, t => Assert.Equal(Encoding.UTF8.GetBytes(t.GetProperty("token").GetString()!), t.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32())));
    }

    [Fact]
    public async Task ChatLogprobsAreTheModelsAtEachTokensExitLoopWholeAndStreamed()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var prompt = ChatTemplate.Render([new AIChatMessage(ChatRole.User, "hello there")], model.Codec, ChatTemplateKind.Auto).Ids;
        const string body = $$"""{"messages":{{Hello}},"max_tokens":10,"temperature":1.3,"seed":5,"exit_threshold":0.6,"logprobs":true,"top_logprobs":3}""";

        var r = await Post(server, "/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var content = r.Json.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content").EnumerateArray().ToList();
        Assert.Equal(r.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), content.Count);
        var ids = content.Select(c => (long)LettersTokenizer.Alphabet.IndexOf(c.GetProperty("token").GetString()!)).ToList();
        Assert.Equal(r.Json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), string.Concat(content.Select(c => c.GetProperty("token").GetString())));
        var scored = Scored(model, prompt.Concat(ids), 0.6);
        Assert.Contains(content, c => c.GetProperty("exit_loop").GetInt32() < 4);            // adaptive exit happened
        for (int j = 0; j < content.Count; j++)
        {
            int at = prompt.Length - 1 + j;
            double logprob = content[j].GetProperty("logprob").GetDouble();
            Tolerance.AssertClose(scored.TokenLogProbabilities[at], logprob, $"token {j}", relative: 1e-4, absolute: 1e-4);
            Assert.Equal((int)scored.ExitSteps[at], content[j].GetProperty("exit_loop").GetInt32());
            CheckTop(content[j], logprob, content[j].GetProperty("token").GetString()!, 3);
        }

        // Streamed: the chunks' logprobs, in order, are the whole reply's.
        var chunks = await Events(server, "/v1/chat/completions", body.Replace("\"logprobs\":true", "\"stream\":true,\"logprobs\":true"));
        var streamed = chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray())
            .Where(c => c.GetProperty("logprobs").ValueKind == JsonValueKind.Object)
            .SelectMany(c => c.GetProperty("logprobs").GetProperty("content").EnumerateArray()).ToList();
        Assert.Equal(content.Select(c => c.GetProperty("token").GetString()), streamed.Select(c => c.GetProperty("token").GetString()));
        Tolerance.AssertClose(content.Select(c => c.GetProperty("logprob").GetDouble()).ToList(), streamed.Select(c => c.GetProperty("logprob").GetDouble()).ToList());
    }

    [Fact]
    public async Task TheOfficialClientReadsChatLogprobs()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var chat = server.OpenAI.GetChatClient("tiny-test");
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("hello there")],
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 6, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 });
        Assert.Equal(completion.Usage.OutputTokenCount, completion.ContentTokenLogProbabilities.Count);
        foreach (var token in completion.ContentTokenLogProbabilities)
        {
            Assert.Equal(2, token.TopLogProbabilities.Count);
            Assert.Equal(token.Token, token.TopLogProbabilities[0].Token);                   // greedy: the chosen token is the likeliest
            Assert.True(token.LogProbability <= 0);
        }
    }

    [Fact]
    public async Task NChoicesAreTheSeededRepliesWithSeedPlusIndexWholeAndStreamed()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        const string body = $$"""{"messages":{{Hello}},"max_tokens":12,"temperature":1.2,"seed":7,"n":3}""";
        var r = await Post(server, "/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var choices = r.Json.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        int tokens = 0;
        for (int i = 0; i < 3; i++)
        {
            var single = await Post(server, "/v1/chat/completions", $$"""{"messages":{{Hello}},"max_tokens":12,"temperature":1.2,"seed":{{7 + i}}}""");
            Assert.Equal(single.Json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(),
                choices[i].GetProperty("message").GetProperty("content").GetString());
            tokens += single.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        }
        Assert.Equal(tokens, r.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.NotEqual(choices[0].GetProperty("message").GetProperty("content").GetString(), choices[1].GetProperty("message").GetProperty("content").GetString());

        var chunks = await Events(server, "/v1/chat/completions", body.Replace("\"n\":3", "\"n\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true}"));
        var parts = chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray()).ToList();
        for (int i = 0; i < 3; i++)
        {
            var mine = parts.Where(p => p.GetProperty("index").GetInt32() == i).ToList();
            Assert.Equal(choices[i].GetProperty("message").GetProperty("content").GetString(),
                string.Concat(mine.Select(p => p.GetProperty("delta").TryGetProperty("content", out var c) ? c.GetString() : "")));
            Assert.Single(mine, p => p.GetProperty("finish_reason").ValueKind == JsonValueKind.String);
        }
        Assert.Equal(tokens, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var completions = await Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":5,"temperature":1,"seed":3,"n":2}""");
        Assert.Equal(2, completions.Json.GetProperty("choices").GetArrayLength());
        Assert.Equal(1, completions.Json.GetProperty("choices")[1].GetProperty("index").GetInt32());
    }

    [Fact]
    public async Task CompletionsLogprobsAndEchoGiveThePromptAndTheReplyTokens()
    {
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(model);
        var r = await Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":6,"temperature":0,"exit_threshold":0.6,"logprobs":2,"echo":true}""");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var choice = r.Json.GetProperty("choices")[0];
        var text = choice.GetProperty("text").GetString()!;
        Assert.StartsWith("abc", text);
        var logprobs = choice.GetProperty("logprobs");
        var tokens = logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToList();
        var prompt = model.Codec.Ids("abc");
        int generated = r.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        Assert.Equal(prompt.Length + generated, tokens.Count);
        Assert.Equal(text, string.Concat(tokens));
        var values = logprobs.GetProperty("token_logprobs").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, values[0].ValueKind);                                // the first prompt token has none
        Assert.Equal(JsonValueKind.Null, logprobs.GetProperty("top_logprobs")[0].ValueKind);
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToList();
        Assert.Equal(0, offsets[0]);
        for (int i = 1; i < offsets.Count; i++) Assert.Equal(offsets[i - 1] + tokens[i - 1].Length, offsets[i]);

        // Every token after the first against one teacher-forced pass over prompt + reply.
        var ids = prompt.Concat(tokens.Skip(prompt.Length).Select(t => (long)LettersTokenizer.Alphabet.IndexOf(t)));
        var scored = Scored(model, ids, 0.6);
        for (int i = 1; i < tokens.Count; i++)
            Tolerance.AssertClose(scored.TokenLogProbabilities[i - 1], values[i].GetDouble(), $"token {i}", relative: 1e-4, absolute: 1e-4);
        for (int i = prompt.Length; i < tokens.Count; i++)
        {
            var top = logprobs.GetProperty("top_logprobs")[i].EnumerateObject().ToList();
            Assert.InRange(top.Count, 1, 2);
            Assert.Equal(tokens[i], top.MaxBy(t => t.Value.GetDouble()).Name);                // greedy: the chosen token is the likeliest
        }

        // Echo without logprobs, and logprobs without echo.
        var plain = await Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":6,"temperature":0,"exit_threshold":0.6,"echo":true}""");
        Assert.Equal(text, plain.Json.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(JsonValueKind.Null, plain.Json.GetProperty("choices")[0].GetProperty("logprobs").ValueKind);
        var noEcho = await Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":6,"temperature":0,"exit_threshold":0.6,"logprobs":0}""");
        Assert.Equal(generated, noEcho.Json.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        Assert.Equal(0, noEcho.Json.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("text_offset")[0].GetInt32());
    }
}
