using LoopRpt.Inference;
using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>
/// Registers LoopRpt's hosting services:
/// <code>
/// builder.Services.AddLoopRptRetraining(builder.Configuration.GetSection("LoopRpt"))
///     .AddStageKind(new ObjectiveKind&lt;MyOptions&gt;("mine", (o, steps) =&gt; new MyObjective(o)));   // extra kinds; pretrain, gate, looprpt are built in
/// </code>
/// </summary>
public static class LoopRptHostingExtensions
{
    /// <summary>The model store only (apps that serve but do not retrain), with options bound from <paramref name="section"/>.</summary>
    public static LoopRptHostingBuilder AddLoopRptModelStore(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        services.AddOptions<ModelStoreOptions>().Bind(section);
        return AddStoreCore(services);
    }

    /// <summary>The model store only, configured in code.</summary>
    public static LoopRptHostingBuilder AddLoopRptModelStore(this IServiceCollection services, Action<ModelStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<ModelStoreOptions>().Configure(configure);
        return AddStoreCore(services);
    }

    /// <summary>
    /// The model store (options from <paramref name="section"/>) and the retraining service (options from its
    /// <c>Retraining</c> child). Both option sets are validated when the host starts.
    /// </summary>
    public static LoopRptHostingBuilder AddLoopRptRetraining(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        var builder = services.AddLoopRptModelStore(section);
        services.AddOptions<RetrainingOptions>().Bind(section.GetSection("Retraining"));
        return AddRetrainingCore(builder);
    }

    /// <summary>The model store and the retraining service, configured in code.</summary>
    public static LoopRptHostingBuilder AddLoopRptRetraining(this IServiceCollection services, Action<ModelStoreOptions> configureStore, Action<RetrainingOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = services.AddLoopRptModelStore(configureStore);
        services.AddOptions<RetrainingOptions>().Configure(configure);
        return AddRetrainingCore(builder);
    }

    /// <summary>
    /// Serves the current version of the <see cref="ModelStore"/> (register it with <see cref="AddLoopRptModelStore(IServiceCollection, IConfiguration)"/>
    /// or <see cref="AddLoopRptRetraining(IServiceCollection, IConfiguration)"/>) as the <see cref="ILoopRptModelSource"/> of the
    /// chat client, embedding generator and server: retrained versions are promoted while requests flow.
    /// </summary>
    public static IServiceCollection AddLoopRptModelStoreSource(this IServiceCollection services, string modelId = "looprpt")
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton<ILoopRptModelSource>(sp => new ModelStoreSource(sp.GetRequiredService<ModelStore>(), modelId));
        return services;
    }

    private static LoopRptHostingBuilder AddStoreCore(IServiceCollection services)
    {
        services.AddOptions<ModelStoreOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ModelStoreOptions>, ModelStoreOptionsValidator>());
        services.TryAddSingleton<ITokenizerService, ByteTokenizerService>();
        if (!services.Any(d => d.ServiceType == typeof(ModelStore)))
        {
            services.AddSingleton<ModelStore>();
            services.AddHostedService<ModelStoreInitializer>();    // registered first, so it starts before the retraining service
            services.AddHostedService<ModelStoreWatcher>();        // follows promotions made by other processes
        }
        return new LoopRptHostingBuilder(services);
    }

    private static LoopRptHostingBuilder AddRetrainingCore(LoopRptHostingBuilder builder)
    {
        var services = builder.Services;
        services.AddOptions<RetrainingOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RetrainingOptions>, RetrainingOptionsValidator>());
        services.AddOptions<ObjectiveKindRegistry>();       // the stage kinds: the built-in ones and those of AddStageKind
        if (!services.Any(d => d.ServiceType == typeof(RetrainingService)))
        {
            services.AddSingleton<RetrainingService>();
            services.AddHostedService(sp => sp.GetRequiredService<RetrainingService>());
        }
        return builder;
    }
}

/// <summary>Further configuration of LoopRpt's hosting services.</summary>
public sealed class LoopRptHostingBuilder(IServiceCollection services)
{
    public IServiceCollection Services { get; } = services;

    /// <summary>
    /// Adds (or replaces) a typed stage kind usable in <see cref="RetrainingOptions.Stages"/>: a stage's <c>Parameters</c> are
    /// bound to the kind's options class (<see cref="ObjectiveKind.BindOptions"/>), and absent optimizer settings take the
    /// kind's defaults. The same <see cref="ObjectiveKind"/> serves ML.NET's <c>Options.ObjectiveKinds</c>.
    /// </summary>
    public LoopRptHostingBuilder AddStageKind(ObjectiveKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        Services.Configure<ObjectiveKindRegistry>(r => r.Add(kind));
        return this;
    }

    /// <summary>Replaces the tokenizer (default: <see cref="ByteTokenizerService"/>).</summary>
    public LoopRptHostingBuilder UseTokenizer(ITokenizerService tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        Services.Replace(ServiceDescriptor.Singleton(tokenizer));
        return this;
    }
}
