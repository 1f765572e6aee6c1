using System.ClientModel;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Server;
using Microsoft.AspNetCore.Builder;
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

    public static async Task<LoopbackServer> StartAsync(ILoopRptModelSource source, LoopRptServerOptions? options = null, LoopRptChatClientOptions? chat = null)
    {
        options ??= new LoopRptServerOptions();
        options.Urls = "http://127.0.0.1:0";
        var app = LoopRptServer.Build(source, options, chat);
        await app.StartAsync();
        return new LoopbackServer(app, new Uri(app.Addresses()[0]));
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
