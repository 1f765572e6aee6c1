using LoopRpt.Cli.Models;
using LoopRpt.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt serve --store DIR [--retrain FILE]</c>'s services: hosting's model store (loaded at start, following its
/// <c>current</c> pointer every poll interval) behind the server's model source, and the retraining service when asked.
/// The command line binds into <see cref="ModelStoreOptions"/>; everything else is hosting's own registration.
/// </summary>
internal sealed class StoreServing
{
    private readonly string _root;
    private readonly IConfigurationSection? _retraining;
    private readonly string _device;
    private readonly TimeSpan _poll;
    private readonly string _modelId;

    private StoreServing(string root, IConfigurationSection? retraining, string device, TimeSpan poll, string modelId)
        => (_root, _retraining, _device, _poll, _modelId) = (root, retraining, device, poll, modelId);

    /// <summary>Checks the inputs before any work: a store with a version (or a retraining file that can seed one), a readable settings file.</summary>
    public static StoreServing Configure(string store, string? retrainFile, string device, TimeSpan poll, string? modelId)
    {
        Devices.Resolve(device);
        var root = StoreCommand.StorePath(store, mustExist: retrainFile is null);
        IConfigurationSection? section = null;
        if (retrainFile is not null)
        {
            if (!File.Exists(retrainFile)) throw CliException.Input($"--retrain: settings file '{retrainFile}' does not exist.");
            try
            {
                section = new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(retrainFile), optional: false, reloadOnChange: false).Build().GetSection("LoopRpt");
            }
            catch (Exception e) when (e is InvalidDataException or FormatException or System.Text.Json.JsonException)
            {
                throw CliException.Input($"--retrain: '{retrainFile}' is not a JSON settings file: {e.Message}", e);
            }
            if (!section.GetSection("Retraining").Exists())
                throw CliException.Input($"--retrain: '{retrainFile}' has no \"LoopRpt\": {{ \"Retraining\": {{ ... }} }} section (docs/hosting.md, Configuration).");
        }
        else if (!Directory.EnumerateDirectories(root, "v*").Any(d => LoopRpt.Checkpoints.ModelDirectory.IsModelDirectory(d)))
        {
            throw CliException.Input($"--store: model store '{store}' holds no version; publish one with `looprpt store publish --store {store} --model DIR`.");
        }
        var name = string.IsNullOrWhiteSpace(modelId) ? Path.GetFileName(root.TrimEnd(Path.DirectorySeparatorChar)) : modelId;
        return new StoreServing(root, section, device, poll, string.IsNullOrWhiteSpace(name) ? "looprpt" : name);
    }

    /// <summary>Registers the store (and the retraining service) and the store as the server's model source.</summary>
    public void Register(IServiceCollection services)
    {
        void Bind(ModelStoreOptions o)
        {
            o.Root = _root;
            o.Device = _device;
            o.FallbackToCpu = false;
            o.PollInterval = _poll;
        }
        if (_retraining is null) services.AddLoopRptModelStore(Bind);
        else
        {
            services.AddLoopRptRetraining(_retraining);
            services.Configure<ModelStoreOptions>(Bind);      // after the file's values: the command line wins
        }
        services.AddLoopRptModelStoreSource(_modelId);
        services.AddLogging(b => b.AddFilter("LoopRpt.Hosting", LogLevel.Information));   // swaps, promotions, rounds
    }

    /// <summary>The startup line's description; refines the automatic thread count by the served model's size.</summary>
    public string Describe(WebApplication app)
    {
        var store = app.Services.GetRequiredService<ModelStore>();
        using var lease = store.Acquire();
        Devices.ForModel(lease.Model);
        var retraining = _retraining is null ? "" : ", retraining beside it";
        var follow = _poll > TimeSpan.Zero ? $"following its current version (poll {_poll.TotalSeconds:0.###} s){retraining}" : "following its own promotions only" + retraining;
        return $"store '{_root}' version {lease.Version} ({lease.Codec.Description}) as model '{_modelId}', {follow},";
    }
}
