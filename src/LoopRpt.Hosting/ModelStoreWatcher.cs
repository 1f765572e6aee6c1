using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>
/// Keeps a serving <see cref="ModelStore"/> on the version its <c>current</c> pointer names: every
/// <see cref="ModelStoreOptions.PollInterval"/>, and at once when a <see cref="FileSystemWatcher"/> sees the pointer
/// replaced (a hint only: polling alone is enough, and works on network and container volumes), it calls
/// <see cref="ModelStore.Refresh"/>. A version that fails to load is logged (once) and retried at every poll; the served
/// one keeps serving.
/// </summary>
internal sealed class ModelStoreWatcher(ModelStore store, IOptions<ModelStoreOptions> options, ILogger<ModelStoreWatcher>? logger = null) : BackgroundService
{
    private readonly ILogger _logger = logger ?? (ILogger)NullLogger.Instance;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.PollInterval;
        if (interval <= TimeSpan.Zero) return;
        using var hint = new SemaphoreSlim(0, 1);
        using var watcher = Watch(store.Root, hint);
        int failed = 0;                                        // the pointed version that last failed to load: logged once
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await hint.WaitAsync(interval, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            try
            {
                store.Refresh();
                failed = 0;
            }
            catch (Exception e) when (e is not ObjectDisposedException)
            {
                int pointed = store.PointedVersion();
                if (pointed != failed) Log.RefreshFailed(_logger, e, store.Root, store.CurrentVersion);
                failed = pointed;
            }
        }
    }

    /// <summary>A watcher releasing <paramref name="hint"/> when the pointer file changes; null where none can be made.</summary>
    private static FileSystemWatcher? Watch(string root, SemaphoreSlim hint)
    {
        try
        {
            Directory.CreateDirectory(root);
            var watcher = new FileSystemWatcher(root) { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite };
            void Poke(object? _, FileSystemEventArgs e)
            {
                if (e.Name != ModelStore.CurrentFile) return;
                try { hint.Release(); }
                catch (SemaphoreFullException) { }            // a poll is already due
                catch (ObjectDisposedException) { }
            }
            watcher.Created += Poke;
            watcher.Changed += Poke;
            watcher.Renamed += (s, e) => Poke(s, e);
            watcher.EnableRaisingEvents = true;
            return watcher;
        }
        catch (Exception e) when (e is IOException or PlatformNotSupportedException or ArgumentException or UnauthorizedAccessException)
        {
            return null;                                      // e.g. the inotify limit: polling alone
        }
    }
}
