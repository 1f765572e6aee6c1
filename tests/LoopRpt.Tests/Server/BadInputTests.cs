using System.ClientModel;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Server;
using LoopRpt.Tests.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;
using OpenAI.Chat;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace LoopRpt.Tests.Server;

/// <summary>One served tiny model (context 256, hidden 32) shared by the bad-input cases.</summary>
public sealed class BadInputServerFixture : IAsyncLifetime
{
    internal LoopRptModel Model { get; } = AiTestSupport.Model();
    internal LoopbackServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await LoopbackServer.StartAsync(Model, new LoopRptServerOptions { MaxTokens = 100 });

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Model.Dispose();
    }
}

/// <summary>
/// Every bad input answers its 4xx in OpenAI's shape with the field the client sent in <c>param</c> (never a 5xx), and
/// no field is silently ignored (docs/serving.md, "Fields" and "Errors").
/// </summary>
[Collection(nameof(ServerCollection))]
public class BadInputTests(BadInputServerFixture fixture) : IClassFixture<BadInputServerFixture>
{
    private const string Chat = "/v1/chat/completions", Completions = "/v1/completions", Embeddings = "/v1/embeddings", Score = "/v1/score";

    private static readonly Encoding Utf8 = new UTF8Encoding(false);

    /// <summary>A raw request; the body's '§' is replaced by <paramref name="rawHex"/> bytes, so invalid UTF-8 reaches the server as sent.</summary>
    internal static async Task<(HttpStatusCode Status, JsonElement Json, HttpResponseMessage Response)> Send(HttpClient http, HttpMethod method, string path,
        string? body = null, string? rawHex = null, string? bearer = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            var parts = body.Split('§');
            var bytes = parts.Length == 1 ? Utf8.GetBytes(body)
                : [.. Utf8.GetBytes(parts[0]), .. Convert.FromHexString(rawHex!), .. Utf8.GetBytes(parts[1])];
            request.Content = new ByteArrayContent(bytes);
            request.Content.Headers.ContentType = new("application/json");
        }
        if (bearer is not null) request.Headers.Authorization = new("Bearer", bearer);
        var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        bool json = response.Content.Headers.ContentType?.MediaType == "application/json" && text.Length > 0;
        return (response.StatusCode, json ? JsonDocument.Parse(text).RootElement.Clone() : default, response);
    }

    private async Task ExpectError(string path, string body, int status, string type, string? code, string? param, string? rawHex = null)
    {
        var (got, json, _) = await Send(fixture.Server.Http, HttpMethod.Post, path, body, rawHex);
        Assert.True((int)got == status, $"{path} {body}: HTTP {(int)got}, expected {status}: {json}");
        var error = json.GetProperty("error");
        Assert.Equal(type, error.GetProperty("type").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
    }

    public static TheoryData<string, string, string, string> InvalidStrings => new()
    {
        // path, body ('§' = the raw bytes), raw bytes (hex), param
        { Chat, """{"messages":[{"role":"user","content":"a\ud800b"}]}""", "", "messages" },
        { Chat, """{"messages":[{"role":"user","content":"a\udc00"}]}""", "", "messages" },
        { Embeddings, """{"input":"x\ud800"}""", "", "input" },
        { Embeddings, """{"input":["ok","\ud800\ud800"]}""", "", "input" },
        { Chat, """{"model":"tiny\ud800","messages":[{"role":"user","content":"a"}]}""", "", "model" },
        { Chat, """{"messages":[{"role":"user","content":"a§"}]}""", "FF", "messages" },             // not UTF-8 at all
        { Chat, """{"messages":[{"role":"user","content":"a§"}]}""", "C3", "messages" },             // truncated sequence
        { Embeddings, """{"input":"§"}""", "EDA080EDB080", "input" },                                 // CESU-8 surrogate pair
        { Completions, """{"prompt":"§"}""", "C080", "prompt" },                                      // overlong encoding
        { Score, """{"input":"a§"}""", "EDA080", "input" },
        { Chat, """{"model":"§","messages":[{"role":"user","content":"a"}]}""", "FE", "model" },
    };

    [Theory]
    [MemberData(nameof(InvalidStrings))]
    public Task StringsThatAreNotValidUnicodeAre400NamingTheField(string path, string body, string rawHex, string param)
        => ExpectError(path, body, 400, "invalid_request_error", "invalid_value", param, rawHex.Length > 0 ? rawHex : null);

    public static TheoryData<string, string, string> InvalidValues => new()
    {
        // path, body, param
        { Embeddings, """{"input":"abc","dimensions":1.5}""", "dimensions" },
        { Embeddings, """{"input":"abc","dimensions":1e12}""", "dimensions" },
        { Embeddings, """{"input":"abc","dimensions":0}""", "dimensions" },
        { Embeddings, """{"input":"abc","dimensions":"32"}""", "dimensions" },
        { Embeddings, """{"input":"abc","dimensions":7}""", "dimensions" },                           // not the hidden size (the generator's check)
        { Embeddings, """{"input":""}""", "input" },
        { Embeddings, """{"input":["abc",""]}""", "input" },
        { Embeddings, """{"input":[]}""", "input" },
        { Embeddings, """{"input":[1,2,3]}""", "input" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"temperature":-1}""", "temperature" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}""", "temperature" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"temperature":1e400}""", "temperature" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"top_p":0}""", "top_p" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"top_p":1.5}""", "top_p" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"seed":-1}""", "seed" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"seed":1.5}""", "seed" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}""", "max_tokens" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"max_tokens":1e12}""", "max_tokens" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}""", "max_completion_tokens" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":101}""", "max_completion_tokens" },  // over the server's 100
        { Completions, """{"prompt":"abc","max_tokens":101}""", "max_tokens" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"exit_threshold":1.5}""", "exit_threshold" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"stop":[1]}""", "stop" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}""", "stream" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":1}}""", "stream_options" },
        { Chat, """{"messages":[]}""", "messages" },
        { Chat, """{"messages":[{"role":"robot","content":"hi"}]}""", "messages" },
        { Chat, """{"model":7,"messages":[{"role":"user","content":"hi"}]}""", "model" },
        { Score, """{"input":"abc","exit_threshold":-0.5}""", "exit_threshold" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"n":0}""", "n" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"n":17}""", "n" },                        // over the cap of 16
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"n":1.5}""", "n" },
        { Completions, """{"prompt":"abc","n":-1}""", "n" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"logprobs":1}""", "logprobs" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}""", "top_logprobs" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":-1}""", "top_logprobs" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"top_logprobs":2}""", "top_logprobs" },           // without logprobs: true
        { Completions, """{"prompt":"abc","logprobs":6}""", "logprobs" },
        { Completions, """{"prompt":"abc","logprobs":true}""", "logprobs" },
        { Completions, """{"prompt":"abc","echo":"yes"}""", "echo" },
    };

    [Theory]
    [MemberData(nameof(InvalidValues))]
    public Task ValuesOfTheWrongKindOrRangeAre400NamingTheField(string path, string body, string param)
        => ExpectError(path, body, 400, "invalid_request_error", "invalid_value", param);

    public static TheoryData<string, string, string, string> UnsupportedFields => new()
    {
        // path, body, code, param
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}""", "unsupported_value", "tools" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"tool_choice":"auto"}""", "unsupported_value", "tool_choice" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}""", "unsupported_value", "response_format" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"presence_penalty":0.5}""", "unsupported_value", "presence_penalty" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"frequency_penalty":-1}""", "unsupported_value", "frequency_penalty" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"logit_bias":{"5":10}}""", "unsupported_value", "logit_bias" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"reasoning_effort":"low"}""", "unsupported_parameter", "reasoning_effort" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"prompt":"abc"}""", "unsupported_parameter", "prompt" },
        { Chat, """{"messages":[{"role":"user","content":"hi","name":"bob"}]}""", "unsupported_parameter", "messages" },
        { Chat, """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", "unsupported_value", "messages" },
        { Chat, """{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"chunk_size":3}}""", "unsupported_parameter", "stream_options" },
        { Completions, """{"prompt":"abc","best_of":2}""", "unsupported_value", "best_of" },
        { Completions, """{"prompt":"abc","suffix":"xyz"}""", "unsupported_value", "suffix" },
        { Completions, """{"prompt":"abc","presence_penalty":1}""", "unsupported_value", "presence_penalty" },
        { Completions, """{"prompt":"abc","logit_bias":{"5":-100}}""", "unsupported_value", "logit_bias" },
        { Completions, """{"prompt":"abc","messages":[]}""", "unsupported_parameter", "messages" },
        { Embeddings, """{"input":"abc","encoding_format":"int8"}""", "unsupported_value", "encoding_format" },
        { Embeddings, """{"input":"abc","truncate":true}""", "unsupported_parameter", "truncate" },
        { Score, """{"input":"abc","temperature":0}""", "unsupported_parameter", "temperature" },
    };

    [Theory]
    [MemberData(nameof(UnsupportedFields))]
    public Task FieldsTheServerDoesNotImplementAre400NamingTheField(string path, string body, string code, string param)
        => ExpectError(path, body, 400, "invalid_request_error", code, param);

    [Fact]
    public async Task TheNeutralValuesOfRefusedFieldsAndOpenAIsMetadataFieldsAreAccepted()
    {
        var http = fixture.Server.Http;
        const string neutral = "\"n\":1,\"tools\":[],\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"},\"logprobs\":false,\"top_logprobs\":0,"
            + "\"presence_penalty\":0,\"frequency_penalty\":0,\"logit_bias\":{},\"user\":\"u1\",\"metadata\":{\"k\":\"v\"},\"store\":false,\"parallel_tool_calls\":true,"
            + "\"seed\":3,\"stop\":[\"zz\"],\"temperature\":0,\"top_p\":1,\"exit_threshold\":0.5,\"max_completion_tokens\":4,"
            + "\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"name\":null,\"tool_calls\":[]}]";
        var chat = await Send(http, HttpMethod.Post, Chat, "{" + neutral + "}");
        Assert.True(chat.Status == HttpStatusCode.OK, chat.Json.ToString());
        var completion = await Send(http, HttpMethod.Post, Completions,
            """{"prompt":"abc","max_tokens":4,"n":1,"best_of":1,"echo":false,"logprobs":null,"suffix":"","presence_penalty":0,"frequency_penalty":0,"logit_bias":{},"user":"u1"}""");
        Assert.True(completion.Status == HttpStatusCode.OK, completion.Json.ToString());
        var embedding = await Send(http, HttpMethod.Post, Embeddings, """{"input":"abc","dimensions":32,"encoding_format":"float","user":"u1"}""");
        Assert.True(embedding.Status == HttpStatusCode.OK, embedding.Json.ToString());
    }

    [Theory]
    [InlineData("chat")]
    [InlineData("completions")]
    [InlineData("embeddings")]
    [InlineData("score")]
    public void TheDocumentedFieldsAreExactlyTheAcceptedOnes(string route)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir.FullName, "LoopRpt.sln"))) dir = dir.Parent!;
        var doc = File.ReadAllLines(Path.Combine(dir.FullName, "docs", "serving.md"));
        var metadata = System.Text.RegularExpressions.Regex.Matches(string.Join(" ", doc.SkipWhile(l => !l.StartsWith("**Fields.**")).Take(6)).Split("Metadata =")[1].Split('(')[0], "`([a-z_]+)`")
            .Select(m => m.Groups[1].Value).ToList();
        var row = Assert.Single(doc, l => l.StartsWith($"| {route} |"));
        var documented = System.Text.RegularExpressions.Regex.Matches(row, "`([a-z_]+)`").Select(m => m.Groups[1].Value).ToList();
        if (row.Contains(", metadata |")) documented.AddRange(metadata);
        Assert.Equal(RequestFields.Of(route).Order(), documented.Distinct().Order());
    }

    public static TheoryData<string, string, string> WrongMethods => new()
    {
        { "GET", Chat, "POST" }, { "PUT", Chat, "POST" }, { "DELETE", Completions, "POST" }, { "GET", Completions, "POST" },
        { "DELETE", Embeddings, "POST" }, { "GET", Embeddings, "POST" }, { "GET", Score, "POST" }, { "PATCH", Score, "POST" },
        { "POST", "/v1/models", "GET" }, { "DELETE", "/v1/models", "GET" }, { "POST", "/v1/models/tiny-test", "GET" },
        { "DELETE", "/v1/models/tiny-test", "GET" }, { "POST", "/healthz", "GET" }, { "OPTIONS", "/healthz", "GET" }, { "HEAD", Chat, "POST" },
    };

    [Theory]
    [MemberData(nameof(WrongMethods))]
    public async Task AWrongMethodIs405WithAllow(string method, string path, string allow)
    {
        var (status, json, response) = await Send(fixture.Server.Http, new HttpMethod(method), path, method is "GET" or "HEAD" or "OPTIONS" or "DELETE" ? null : "{}");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, status);
        Assert.Equal([allow], response.Content.Headers.Allow);
        if (method != "HEAD") Assert.Equal("method_not_allowed", json.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task APromptPastTheContextIsContextLengthExceeded()
    {
        var longText = new string('a', 300);                                                         // the context is 256 tokens
        await ExpectError(Chat, $$"""{"messages":[{"role":"user","content":"{{longText}}"}]}""", 400, "invalid_request_error", "context_length_exceeded", "messages");
        await ExpectError(Chat, $$"""{"messages":[{"role":"user","content":"{{longText}}"}],"max_tokens":5}""", 400, "invalid_request_error", "context_length_exceeded", "messages");
        await ExpectError(Completions, $$"""{"prompt":"{{longText}}"}""", 400, "invalid_request_error", "context_length_exceeded", "prompt");
        await ExpectError(Completions, $$"""{"prompt":"{{longText}}","stream":true}""", 400, "invalid_request_error", "context_length_exceeded", "prompt");
        // A prompt that fits, with a token budget that does not.
        await ExpectError(Completions, $$"""{"prompt":"{{new string('a', 200)}}","max_tokens":60}""", 400, "invalid_request_error", "context_length_exceeded", "prompt");
        await ExpectError(Completions, $$"""{"prompt":"{{new string('a', 256)}}"}""", 400, "invalid_request_error", "context_length_exceeded", "prompt");
    }

    [Fact]
    public async Task AnOmittedMaxTokensIsTheRoomLeftInTheContextCappedByTheServersLimit()
    {
        var model = fixture.Model;
        // Independent: the greedy reply of a 250-token prompt given the 6 tokens left in the 256-token context.
        var prompt = new string('b', 250);
        long[] ids = [.. model.Codec.Encode(prompt, addBos: true).Select(i => (long)i)];          // as /v1/completions encodes a prompt
        int room = model.Model.Config.MaxPositionEmbeddings - ids.Length;
        Assert.InRange(room, 2, 10);
        var reply = new LoopedGenerator(model.Model).Generate(ids, new GenerationOptions { MaxNewTokens = room, Temperature = 0, StopTokens = [LettersTokenizer.EndOfText] });
        var r = await Send(fixture.Server.Http, HttpMethod.Post, Completions, $$"""{"prompt":"{{prompt}}","temperature":0}""");
        Assert.True(r.Status == HttpStatusCode.OK, r.Json.ToString());
        Assert.Equal(ids.Length, r.Json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(reply.Tokens.Length, r.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(reply.Tokens.Length == room ? "length" : "stop", r.Json.GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        // A short prompt: the room (256 - 3) is over the server's limit of 100, so the greedy reply gets 100 at most.
        var shortReply = await Send(fixture.Server.Http, HttpMethod.Post, Completions, """{"prompt":"abc","temperature":0}""");
        Assert.True(shortReply.Status == HttpStatusCode.OK, shortReply.Json.ToString());
        long[] abc = [.. model.Codec.Encode("abc", addBos: true).Select(i => (long)i)];
        var greedy = new LoopedGenerator(model.Model).Generate(abc, new GenerationOptions { MaxNewTokens = 100, Temperature = 0, StopTokens = [LettersTokenizer.EndOfText] });
        Assert.Equal(greedy.Tokens.Length, shortReply.Json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // Through the official client, a chat prompt near the context with no max tokens gets a reply.
        var content = new string('c', 230);
        var rendered = ChatTemplate.Render([new AIChatMessage(ChatRole.User, content)], model.Codec, ChatTemplateKind.Auto);
        Assert.InRange(rendered.Ids.Length, 240, 255);
        ChatCompletion completion = await fixture.Server.OpenAI.GetChatClient("tiny-test").CompleteChatAsync([new UserChatMessage(content)], new ChatCompletionOptions { Temperature = 0 });
        Assert.Equal(rendered.Ids.Length, completion.Usage.InputTokenCount);
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 256 - rendered.Ids.Length);
    }

    [Fact]
    public async Task ModelsRetrieveWorksThroughTheOfficialClientAndAnotherIdIsModelNotFound()
    {
        var models = fixture.Server.OpenAI.GetOpenAIModelClient();
        var model = (await models.GetModelAsync("tiny-test")).Value;
        Assert.Equal("tiny-test", model.Id);
        Assert.Equal("looprpt", model.OwnedBy);
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync("gpt-4o"));
        Assert.Equal(404, missing.Status);
        var (status, json, _) = await Send(fixture.Server.Http, HttpMethod.Get, "/v1/models/org/other-model");
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("model_not_found", json.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("model", json.GetProperty("error").GetProperty("param").GetString());
    }

    [Fact]
    public async Task TheApiKeyIsRequiredOnEveryV1RouteAndHealthzStaysOpen()
    {
        await using var server = await LoopbackServer.StartAsync(fixture.Model, new LoopRptServerOptions { ApiKey = "sk-loop-7" });
        var http = server.Http;
        foreach (var bearer in new string?[] { null, "wrong", "sk-loop-", "sk-loop-77" })
        {
            foreach (var (method, path, body) in new[] { ("GET", "/v1/models", (string?)null), ("GET", "/v1/models/tiny-test", null),
                         ("POST", Chat, """{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""), ("POST", Completions, """{"prompt":"a","max_tokens":2}"""),
                         ("POST", Embeddings, """{"input":"a"}"""), ("POST", Score, """{"input":"ab"}""") })
            {
                var (status, json, response) = await Send(http, new HttpMethod(method), path, body, bearer: bearer);
                Assert.Equal(HttpStatusCode.Unauthorized, status);
                Assert.Equal("invalid_api_key", json.GetProperty("error").GetProperty("code").GetString());
                Assert.Equal("Bearer", Assert.Single(response.Headers.WwwAuthenticate).Scheme);
            }
        }
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);
        var wrong = new OpenAIClient(new ApiKeyCredential("nope"), new OpenAIClientOptions { Endpoint = new Uri(server.Root, "/v1") });
        Assert.Equal(401, (await Assert.ThrowsAsync<ClientResultException>(() => wrong.GetChatClient("tiny-test").CompleteChatAsync([new UserChatMessage("hi")]))).Status);
        var right = new OpenAIClient(new ApiKeyCredential("sk-loop-7"), new OpenAIClientOptions { Endpoint = new Uri(server.Root, "/v1") });
        ChatCompletion reply = await right.GetChatClient("tiny-test").CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0 });
        Assert.InRange(reply.Usage.OutputTokenCount, 1, 3);
        Assert.Equal(HttpStatusCode.OK, (await Send(http, HttpMethod.Post, Embeddings, """{"input":"a"}""", bearer: "sk-loop-7")).Status);
    }

    /// <summary>A chat client that sends one piece of text and then waits until it is cancelled.</summary>
    private sealed class StallingChatClient : IChatClient
    {
        public Task<ChatResponse> GetResponseAsync(IEnumerable<AIChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AIChatMessage> messages, ChatOptions? options = null,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, "first");
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose() { }
    }

    [Fact]
    public async Task AStreamThatTimesOutAfterItStartedEndsWithAnErrorEventThenDone()
    {
        await using var server = await LoopbackServer.StartAsync(fixture.Model, new LoopRptServerOptions { RequestTimeoutSeconds = 0.5 },
            configureServices: s => s.AddChatClient(new StallingChatClient()));
        var (status, _, response) = await Send(server.Http, HttpMethod.Post, Chat, """{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, events.Length);
        Assert.Equal("first", JsonDocument.Parse(events[0]["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta").GetProperty("content").GetString());
        var error = JsonDocument.Parse(events[1]["data: ".Length..]).RootElement.GetProperty("error");
        Assert.Equal("timeout_error", error.GetProperty("type").GetString());
        Assert.Equal("timeout", error.GetProperty("code").GetString());
        Assert.Equal("data: [DONE]", events[2]);
    }
}
