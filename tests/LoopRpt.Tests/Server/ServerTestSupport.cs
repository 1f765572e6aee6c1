using System.ClientModel;
using LoopRpt.AI;
using LoopRpt.Checkpoints;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tokenization;
using LoopRpt.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;

namespace LoopRpt.Tests.Server;

/// <summary>The server tests share the CPU with heavy request loads: run them one class at a time.</summary>
[CollectionDefinition(nameof(ServerCollection), DisableParallelization = true)]
public sealed class ServerCollection;

/// <summary>A LoopRpt server on a free loopback port, with the official OpenAI client and a plain HttpClient pointed at it.</summary>
internal sealed class LoopbackServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private LoopbackServer(WebApplication app, Uri root)
    {
        _app = app;
        Root = root;
        Http = new HttpClient { BaseAddress = root };
        OpenAI = new OpenAIClient(new ApiKeyCredential("not-checked"), new OpenAIClientOptions { Endpoint = new Uri(root, "/v1") });
    }

    public Uri Root { get; }
    public HttpClient Http { get; }
    public OpenAIClient OpenAI { get; }

    public static Task<LoopbackServer> StartAsync(ILoopRptModelSource source, LoopRptServerOptions? options = null, LoopRptChatClientOptions? chat = null,
        Action<IServiceCollection>? configureServices = null)
    {
        options ??= new LoopRptServerOptions();
        options.Urls = "http://127.0.0.1:0";
        return StartAsync(LoopRptServer.Build(source, options, chat, configureServices: configureServices));
    }

    /// <summary>A server over the model source that <paramref name="configureServices"/> registers (a model store, say).</summary>
    public static Task<LoopbackServer> StartAsync(Action<IServiceCollection> configureServices)
        => StartAsync(LoopRptServer.Build(configureServices, new LoopRptServerOptions { Urls = "http://127.0.0.1:0" }));

    private static async Task<LoopbackServer> StartAsync(WebApplication app)
    {
        await app.StartAsync();
        return new LoopbackServer(app, new Uri(app.Addresses()[0]));
    }

    /// <summary>The application's services (the model store behind it, say).</summary>
    public IServiceProvider Services => _app.Services;

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>What a chat request's greedy reply must be, computed with the core generator (an independent path from the server's).</summary>
internal static class GreedyReplies
{
    /// <summary>The reply to each prompt (one user message, the chat template, greedy, up to <paramref name="maxTokens"/>, stopping at <paramref name="stop"/>).</summary>
    public static string[] Of(OuroForCausalLM lm, TextCodec codec, string[] prompts, int maxTokens, int stop) => prompts.Select(p =>
    {
        var prompt = ChatTemplate.Render([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, p)], codec, ChatTemplateKind.Auto);
        var reply = new LoopedGenerator(lm).Generate(prompt.Ids, new GenerationOptions { MaxNewTokens = maxTokens, Temperature = 0, StopTokens = [stop] });
        return codec.Decode(reply.Tokens.Where(t => t != stop).Select(t => (int)t));
    }).ToArray();

    /// <summary>A tiny model with the byte tokenizer (what a store opens with no other tokenizer registered), saved to <paramref name="directory"/>.</summary>
    public static OuroForCausalLM SaveByteModel(string directory, long seed)
    {
        var lm = TestUtil.TinyModel(vocab: ByteTokenizer.VocabularySize, seed: seed);
        ModelDirectory.Save(directory, lm, new ModelMeta { Tokenizer = ByteTokenizer.Describe() });
        return lm;
    }
}
