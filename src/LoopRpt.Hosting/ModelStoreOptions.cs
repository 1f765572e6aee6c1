namespace LoopRpt.Hosting;

/// <summary>
/// Options of <see cref="ModelStore"/>, bound from the configuration section passed to
/// <c>AddLoopRptModelStore</c> / <c>AddLoopRptRetraining</c> (e.g. <c>"LoopRpt"</c>).
/// </summary>
public sealed class ModelStoreOptions
{
    /// <summary>Default values, shared by the options and the documentation.</summary>
    public static class Defaults
    {
        public const int KeepVersions = 3;
        public const string Device = "cpu";

        /// <summary>How often a serving store checks its <c>current</c> pointer for another process's promotion.</summary>
        public static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);
    }

    /// <summary>Directory of the store: version directories <c>v0001/</c>, <c>v0002/</c>, ... and the <c>current</c> pointer file. Required.</summary>
    public string Root { get; set; } = "";

    /// <summary>Model versions kept on disk, the current one included; older ones are deleted after a promotion. Default 3.</summary>
    public int KeepVersions { get; set; } = Defaults.KeepVersions;

    /// <summary>Device models are loaded on: "cpu", "cuda" or "cuda:N". Default "cpu".</summary>
    public string Device { get; set; } = Defaults.Device;

    /// <summary>When CUDA is requested but absent, load on the CPU instead of failing. Default true.</summary>
    public bool FallbackToCpu { get; set; } = true;

    /// <summary>
    /// A LoopRpt model directory imported as version 1 when the store is empty. At most one of this and
    /// <see cref="InitialPreset"/> may be set.
    /// </summary>
    public string? InitialModelDirectory { get; set; }

    /// <summary>
    /// A model preset (<c>tiny</c>, <c>small</c>, ...) created with random weights as version 1 when the store is empty;
    /// its vocabulary is the tokenizer's (<see cref="ITokenizerService.VocabSize"/>).
    /// </summary>
    public string? InitialPreset { get; set; }

    /// <summary>
    /// How often the host checks the store's <c>current</c> pointer and serves the version it names
    /// (<see cref="ModelStore.Refresh"/>), so versions published or promoted by another process (<c>looprpt store
    /// publish/promote/rollback</c>, a retraining service in another host) are picked up without a restart; a file-system
    /// watcher makes it sooner where the platform supports one. Default 1 s; <c>00:00:00</c> = follow only this process's
    /// own promotions.
    /// </summary>
    public TimeSpan PollInterval { get; set; } = Defaults.PollInterval;

    /// <summary>Seed of the random initial weights for <see cref="InitialPreset"/>. Default 0.</summary>
    public long InitialSeed { get; set; }
}
