using LoopRpt.Inference;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace LoopRpt.AI;

/// <summary>
/// Registers LoopRpt as the application's chat client and embedding generator:
/// <code>
/// services.AddLoopRptModel("models/quickstart");              // or LoopRpt.Hosting's AddLoopRptModelStoreSource()
/// services.AddLoopRptChatClient(o =&gt; o.ExitThreshold = 0.8).UseLogging();        // a Microsoft.Extensions.AI pipeline
/// services.AddLoopRptEmbeddingGenerator();
/// </code>
/// </summary>
public static class LoopRptAIServiceCollectionExtensions
{
    /// <summary>Serves one model loaded from <paramref name="directory"/> (see <see cref="LoopRptModel.Load"/>).</summary>
    public static IServiceCollection AddLoopRptModel(this IServiceCollection services, string directory, string device = "cpu", string? modelId = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        services.TryAddSingleton<ILoopRptModelSource>(_ => LoopRptModel.Load(directory, device, modelId));
        return services;
    }

    /// <summary>
    /// Registers a <see cref="LoopRptChatClient"/> over the registered <see cref="ILoopRptModelSource"/> as the
    /// <see cref="IChatClient"/>; returns the builder to add middleware (logging, caching, OpenTelemetry).
    /// </summary>
    public static ChatClientBuilder AddLoopRptChatClient(this IServiceCollection services, Action<LoopRptChatClientOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = new LoopRptChatClientOptions();
        configure?.Invoke(options);
        options.Validate();
        return services.AddChatClient(sp => new LoopRptChatClient(sp.GetRequiredService<ILoopRptModelSource>(), options));
    }

    /// <summary>
    /// Registers a <see cref="LoopRptEmbeddingGenerator"/> over the registered <see cref="ILoopRptModelSource"/>; returns
    /// the builder to add middleware.
    /// </summary>
    public static EmbeddingGeneratorBuilder<string, Embedding<float>> AddLoopRptEmbeddingGenerator(this IServiceCollection services,
        Action<LoopRptEmbeddingGeneratorOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = new LoopRptEmbeddingGeneratorOptions();
        configure?.Invoke(options);
        return services.AddEmbeddingGenerator(sp => new LoopRptEmbeddingGenerator(sp.GetRequiredService<ILoopRptModelSource>(), options));
    }
}
