using LoopRpt.AI;
using LoopRpt.Inference;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;

namespace LoopRpt.Server;

/// <summary>
/// Builds the OpenAI-compatible server (ASP.NET Core minimal APIs):
/// <code>
/// using var model = LoopRptModel.Load("models/quickstart");
/// await using var app = LoopRptServer.Build(model, new LoopRptServerOptions { Urls = "http://127.0.0.1:8080" });
/// await app.RunAsync();
/// </code>
/// or, in an existing web application, <c>services.AddLoopRptServer(...)</c> and <c>app.MapLoopRptOpenAI()</c>.
/// </summary>
public static class LoopRptServer
{
    /// <summary>
    /// Registers what the endpoints need over the registered <see cref="ILoopRptModelSource"/>: the request limits,
    /// OpenTelemetry metrics (<c>LoopRpt.Inference</c>, <c>LoopRpt.Server</c>; exported over OTLP when
    /// <see cref="LoopRptServerOptions.OtlpEndpoint"/> or <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set) and, when the host has
    /// registered none, LoopRpt's <see cref="IChatClient"/> and <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/>
    /// (with <paramref name="chat"/> and <paramref name="embeddings"/>).
    /// </summary>
    /// <remarks>
    /// The endpoints serve every generation and embedding through the <see cref="IChatClient"/> and
    /// <c>IEmbeddingGenerator&lt;string, Embedding&lt;float&gt;&gt;</c> resolved from DI, so middleware applies to server
    /// traffic. To add some, register the client with its pipeline before this call (or in
    /// <see cref="Build(Action{IServiceCollection}, LoopRptServerOptions?, LoopRptChatClientOptions?, LoopRptEmbeddingGeneratorOptions?)"/>'s <c>configureServices</c>):
    /// <code>
    /// services.AddLoopRptChatClient(o =&gt; o.ExitThreshold = 0.8).UseLogging().UseOpenTelemetry();
    /// services.AddLoopRptEmbeddingGenerator().UseLogging();
    /// services.AddLoopRptServer(options);
    /// </code>
    /// LoopRpt's details (model version, loops) are read from each response's <c>RawRepresentation</c>, else from its
    /// <c>Usage</c> and <c>AdditionalProperties</c> (<see cref="LoopRptUsage"/>).
    /// </remarks>
    public static IServiceCollection AddLoopRptServer(this IServiceCollection services, LoopRptServerOptions options,
        LoopRptChatClientOptions? chat = null, LoopRptEmbeddingGeneratorOptions? embeddings = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        services.AddSingleton(Options.Create(options));
        services.TryAddSingleton<RequestGate>();
        services.TryAddSingleton<ApiKeyCheck>();
        if (!Registered<IChatClient>(services))
            services.AddChatClient(sp => new LoopRptChatClient(sp.GetRequiredService<ILoopRptModelSource>(), WithLimit(chat, options.MaxTokens)));
        if (!Registered<IEmbeddingGenerator<string, Embedding<float>>>(services))
            services.AddEmbeddingGenerator(sp => new LoopRptEmbeddingGenerator(sp.GetRequiredService<ILoopRptModelSource>(), embeddings));
        var otlp = options.OtlpEndpoint ?? Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
        services.AddOpenTelemetry().WithMetrics(m =>
        {
            m.AddMeter(InferenceMetrics.MeterName, OpenAIEndpoints.MeterName);
            if (!string.IsNullOrWhiteSpace(otlp)) m.AddOtlpExporter(o => o.Endpoint = new Uri(otlp));
        });
        return services;
    }

    /// <summary>The chat options with the server's token limit as the cap of a request that gives none (when it sets no cap itself).</summary>
    private static LoopRptChatClientOptions? WithLimit(LoopRptChatClientOptions? chat, int? limit)
    {
        if (limit is null || chat?.MaxOutputTokens is not null) return chat;
        var o = chat?.Clone() ?? new LoopRptChatClientOptions();
        o.MaxOutputTokens = limit;
        return o;
    }

    private static bool Registered<TService>(IServiceCollection services)
        => services.Any(d => d.ServiceType == typeof(TService) && !d.IsKeyedService);

    /// <summary>
    /// A web application serving <paramref name="source"/> on <see cref="LoopRptServerOptions.Urls"/>. The caller keeps
    /// owning <paramref name="source"/>; <paramref name="configureServices"/> runs first and may add services (logging,
    /// retraining, or a chat client / embedding generator with its middleware, which the server then uses instead of
    /// building its own from <paramref name="chat"/> and <paramref name="embeddings"/>).
    /// </summary>
    public static WebApplication Build(ILoopRptModelSource source, LoopRptServerOptions? options = null, LoopRptChatClientOptions? chat = null,
        LoopRptEmbeddingGeneratorOptions? embeddings = null, Action<IServiceCollection>? configureServices = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Build(s =>
        {
            s.AddSingleton(source);
            configureServices?.Invoke(s);
        }, options, chat, embeddings);
    }

    /// <summary>
    /// A web application serving the <see cref="ILoopRptModelSource"/> that <paramref name="configureServices"/> registers
    /// (e.g. a hosting model store: <c>s.AddLoopRptModelStore(...)</c> and <c>s.AddLoopRptModelStoreSource()</c>, whose
    /// hosted services load the store at start and follow its promotions), on <see cref="LoopRptServerOptions.Urls"/>.
    /// </summary>
    public static WebApplication Build(Action<IServiceCollection> configureServices, LoopRptServerOptions? options = null,
        LoopRptChatClientOptions? chat = null, LoopRptEmbeddingGeneratorOptions? embeddings = null)
    {
        ArgumentNullException.ThrowIfNull(configureServices);
        options ??= new LoopRptServerOptions();
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseUrls(options.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = null);    // the endpoints enforce the limit with an OpenAI-shaped 413
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        configureServices(builder.Services);
        builder.Services.AddLoopRptServer(options, chat, embeddings);
        var app = builder.Build();
        app.MapLoopRptOpenAI();
        app.MapFallback((HttpContext http) =>
        {
            http.Response.StatusCode = 404;
            return http.Response.WriteAsJsonAsync(new ApiError(404, $"No route {http.Request.Method} {http.Request.Path}; see /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/score, /healthz.",
                code: "unknown_url").Body);
        });
        return app;
    }

    /// <summary>The addresses a started application listens on (port 0 resolved to the real port).</summary>
    public static IReadOnlyList<string> Addresses(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];
    }
}
