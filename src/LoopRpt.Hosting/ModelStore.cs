using System.Globalization;
using System.Text.Json.Nodes;
using LoopRpt.Checkpoints;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace LoopRpt.Hosting;

/// <summary>
/// Versioned model directories with one model served at a time. Scorers on any thread take a lease
/// (<c>using var lease = store.Acquire();</c>) and use <see cref="ModelLease.Model"/>; a promotion swaps the served
/// model atomically, and the old one (TorchSharp modules own native memory) is disposed when its last lease is released.
/// <para>On disk, under <see cref="ModelStoreOptions.Root"/>:</para>
/// <code>
/// v0001/ v0002/ ...   complete LoopRpt model directories (config.json, model.safetensors, meta.json), each written atomically
/// current             the served version's directory name, replaced atomically after the directory is complete
/// </code>
/// A version folder, and the store root (its current version), open anywhere a model directory does
/// (<see cref="ModelOpener.Open"/>: <c>looprpt score/generate/evaluate/serve</c>, the library, ML.NET).
/// Old versions beyond <see cref="ModelStoreOptions.KeepVersions"/> are renamed to <c>vNNNN.deleting-*</c> (atomic) and
/// then deleted, so an interrupted deletion never leaves a half-deleted directory that looks like a version.
/// </summary>
public sealed class ModelStore : IDisposable
{
    /// <summary>The pointer file naming the served version (<see cref="ModelOpener.CurrentPointerFile"/>).</summary>
    public const string CurrentFile = ModelOpener.CurrentPointerFile;

    /// <summary>The file whose exclusive lock serializes the store's writers (publish, promote, prune) across processes.</summary>
    public const string LockFile = ".writer.lock";

    /// <summary>How long a writer waits for another one (a publish of a large model holds the lock while it saves).</summary>
    private static readonly TimeSpan LockWait = TimeSpan.FromMinutes(10);
    private const string DeletingMarker = ".deleting-";

    private readonly IOptions<ModelStoreOptions> _optionsAccessor;
    private readonly ITokenizerService _tokenizer;
    private readonly ILogger _logger;
    private readonly object _gate = new();      // serializes loading, publishing and disposal; never taken by Acquire
    private ServedModel? _current;
    private Device? _device;
    private int _live;
    private bool _disposed;

    public ModelStore(IOptions<ModelStoreOptions> options, ITokenizerService tokenizer, ILogger<ModelStore>? logger = null)
    {
        // Options are read on first use, not here: the host constructs hosted services (and so this store) before
        // ValidateOnStart runs, and a failed validation must surface as its own clear message.
        _optionsAccessor = options;
        _tokenizer = tokenizer;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    private ModelStoreOptions Settings => _optionsAccessor.Value;

    /// <summary>Absolute path of the store.</summary>
    public string Root => string.IsNullOrWhiteSpace(Settings.Root)
        ? throw new InvalidOperationException("ModelStoreOptions.Root must name the model store directory.")
        : Path.GetFullPath(Settings.Root);

    /// <summary>Version being served (0 before the first load).</summary>
    public int CurrentVersion => Volatile.Read(ref _current)?.Version ?? 0;

    /// <summary>Loaded models not yet disposed: the served one plus older ones still held by leases. A diagnostic.</summary>
    public int LiveModels => Volatile.Read(ref _live);

    /// <summary>The device models are loaded on.</summary>
    public Device Device
    {
        get
        {
            lock (_gate) return _device ??= TorchNative.ResolveDevice(Settings.Device, Settings.FallbackToCpu);
        }
    }

    /// <summary>Directory of version <paramref name="version"/>.</summary>
    public string VersionDirectory(int version) => Path.Combine(Root, VersionName(version));

    /// <summary>Complete version directories on disk, ascending.</summary>
    public IReadOnlyList<int> Versions()
    {
        if (!Directory.Exists(Root)) return [];
        return Directory.GetDirectories(Root, "v*")
            .Select(d => TryParseVersion(Path.GetFileName(d)))
            .Where(v => v > 0 && ModelDirectory.IsModelDirectory(VersionDirectory(v)))
            .Order().ToList();
    }

    /// <summary>
    /// Loads the current version (or creates version 1 from <see cref="ModelStoreOptions.InitialModelDirectory"/> /
    /// <see cref="ModelStoreOptions.InitialPreset"/> when the store is empty). Idempotent; the host calls it at start.
    /// </summary>
    public void EnsureLoaded()
    {
        if (Volatile.Read(ref _current) is not null) return;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_current is not null) return;
            Directory.CreateDirectory(Root);
            RemoveInterruptedDeletions();
            int version = ReadPointer();
            if (version == 0)
            {
                using var writer = LockStore();                // another process may be seeding or publishing the first version
                version = ReadPointer();
                if (version == 0) version = Seed();
            }
            var loaded = Open(VersionDirectory(version));
            Volatile.Write(ref _current, Serve(loaded, version));
            Log.ModelLoaded(_logger, version, loaded.Directory, Device.ToString());
        }
    }

    /// <summary>A lease on the served model; dispose it when done (the model stays alive until then, even across a swap).</summary>
    public ModelLease Acquire()
    {
        EnsureLoaded();
        while (true)
        {
            var served = Volatile.Read(ref _current) ?? throw new ObjectDisposedException(nameof(ModelStore));
            // Fails only if a swap released this model's last reference in between: read the new current and retry.
            if (served.TryAddRef()) return new ModelLease(served);
        }
    }

    /// <summary>
    /// Saves <paramref name="lm"/> as the next version (the highest on disk plus one) and verifies that it loads (what a
    /// restart would serve); with <paramref name="promote"/> (default; always when the store has no current version yet)
    /// points <c>current</c> at it and, when this store serves (<see cref="EnsureLoaded"/>), swaps it in. Then prunes old
    /// versions. Returns the new version. An empty store configured with an initial model is seeded with it as version 1
    /// first. <paramref name="lm"/> stays owned by the caller. Safe against other processes writing the same store (one
    /// writer at a time, <see cref="LockFile"/>). On failure (disk full, ...) nothing changes.
    /// </summary>
    public int Publish(OuroForCausalLM lm, ModelMeta meta, bool promote = true)
    {
        ArgumentNullException.ThrowIfNull(lm);
        ArgumentNullException.ThrowIfNull(meta);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Directory.CreateDirectory(Root);
            using var writer = LockStore();
            if (Versions().Count == 0 && (Settings.InitialModelDirectory ?? Settings.InitialPreset) is not null) Seed();   // an empty store starts from its initial model
            int version = Math.Max(_current?.Version ?? 0, Versions().DefaultIfEmpty(0).Max()) + 1;
            promote |= PointedVersion() == 0;
            var dir = VersionDirectory(version);
            OpenedModel? loaded = null;
            try
            {
                ModelDirectory.Save(dir, lm, meta);
                loaded = Open(dir);                            // what a restart would serve, checked before it is pointed at
                if (promote) WritePointer(version);
            }
            catch
            {
                loaded?.Dispose();
                if (Directory.Exists(dir)) Delete(dir);
                throw;
            }
            if (promote && _current is not null) SwapIn(loaded, version);
            else loaded.Dispose();
            Log.VersionSaved(_logger, version, dir, promote);
            Prune(PointedVersion(), version);
            return version;
        }
    }

    /// <summary>
    /// Points <c>current</c> at version <paramref name="version"/> (already in the store: a newer one published without
    /// promotion, or an older one to roll back to) and, when this store serves, swaps it in. Other processes serving the
    /// store follow within their poll interval (<see cref="ModelStoreOptions.PollInterval"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The store holds no complete version <paramref name="version"/>.</exception>
    public void Promote(int version)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!Directory.Exists(Root)) throw new DirectoryNotFoundException($"The model store '{Root}' does not exist.");
            using var writer = LockStore();
            var versions = Versions();
            if (!versions.Contains(version))
                throw new ArgumentOutOfRangeException(nameof(version), version,
                    $"The model store '{Root}' holds no version {version}; it holds {(versions.Count == 0 ? "none" : string.Join(", ", versions))}.");
            // A serving store loads the version before pointing at it: a version that does not load changes nothing.
            var loaded = _current is not null && _current.Version != version ? Open(VersionDirectory(version)) : null;
            try
            {
                WritePointer(version);
            }
            catch
            {
                loaded?.Dispose();
                throw;
            }
            if (loaded is not null) SwapIn(loaded, version);
            Log.VersionPromoted(_logger, version, Root);
        }
    }

    /// <summary>
    /// Promotes the newest version older than the one <c>current</c> names (<see cref="Promote"/>) and returns it.
    /// </summary>
    /// <exception cref="InvalidOperationException">No older version is left in the store.</exception>
    public int Rollback()
    {
        int pointed = PointedVersion();
        int previous = Versions().Where(v => v < pointed).DefaultIfEmpty(0).Max();
        if (previous == 0)
            throw new InvalidOperationException(
                $"The model store '{Root}' holds no version older than {(pointed == 0 ? "its current one" : "v" + pointed)} to roll back to " +
                $"(versions: {string.Join(", ", Versions())}; KeepVersions bounds the history).");
        Promote(previous);
        return previous;
    }

    /// <summary>
    /// The version the <c>current</c> pointer on disk names (0 when there is none, or it names no complete version). It
    /// runs ahead of <see cref="CurrentVersion"/> while another process's promotion is not yet picked up (<see cref="Refresh"/>).
    /// </summary>
    public int PointedVersion()
    {
        var pointer = Path.Combine(Root, CurrentFile);
        string name;
        try
        {
            if (!File.Exists(pointer)) return 0;
            name = File.ReadAllText(pointer).Trim();
        }
        catch (IOException)
        {
            return 0;                                          // being replaced right now: the next read sees the new one
        }
        int v = TryParseVersion(name);
        return v > 0 && ModelDirectory.IsModelDirectory(VersionDirectory(v)) ? v : 0;
    }

    /// <summary>
    /// Serves the version <c>current</c> names on disk if it is not the one served (promoted by another process, or by
    /// <c>looprpt store</c>): loads it and swaps it in; requests holding a lease finish on the old one, which is disposed
    /// when its last lease ends. Returns true when it swapped. Does nothing before <see cref="EnsureLoaded"/> or after
    /// <see cref="Dispose"/>. The hosted <c>ModelStoreWatcher</c> calls it every <see cref="ModelStoreOptions.PollInterval"/>.
    /// </summary>
    public bool Refresh()
    {
        if (Volatile.Read(ref _current) is null) return false;
        lock (_gate)
        {
            if (_disposed || _current is null) return false;
            int pointed = PointedVersion();
            if (pointed == 0 || pointed == _current.Version) return false;
            SwapIn(Open(VersionDirectory(pointed)), pointed);
            return true;
        }
    }

    /// <summary>Releases the store's reference to the served model (disposed now, or when its last lease is released).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Interlocked.Exchange(ref _current, null)?.Release();
        }
    }

    /// <summary>
    /// Opens a version with <see cref="ModelOpener"/>: its tokenizer is the registered <see cref="ITokenizerService"/> when
    /// its <c>meta.json</c> describes that one (or none), else the one described.
    /// </summary>
    private OpenedModel Open(string directory)
    {
        var described = ModelDirectory.ReadMeta(directory).Tokenizer;
        var own = described is null || JsonNode.DeepEquals(described, _tokenizer.Describe());
        return ModelOpener.Open(directory, new ModelOpenOptions { Device = Device, Codec = own ? _tokenizer.ToTextCodec() : null, RequireTokenizer = true });
    }

    private ServedModel Serve(OpenedModel loaded, int version)
    {
        Interlocked.Increment(ref _live);
        return new ServedModel(loaded, version, v =>
        {
            Interlocked.Decrement(ref _live);
            Log.ModelDisposed(_logger, v);
        });
    }

    /// <summary>Makes <paramref name="loaded"/> the served model; the old one is disposed when its last lease ends. Under <see cref="_gate"/>.</summary>
    private void SwapIn(OpenedModel loaded, int version)
    {
        var old = Interlocked.Exchange(ref _current, Serve(loaded, version))!;
        old.Release();
        Log.ModelPublished(_logger, version, loaded.Directory, old.Version);
    }

    private void WritePointer(int version) => AtomicDirectory.WriteAllText(Path.Combine(Root, CurrentFile), VersionName(version) + "\n");

    /// <summary>
    /// The store's writer lock, across processes: <see cref="LockFile"/> opened exclusively (an advisory <c>flock</c> on
    /// Unix, a share lock on Windows), waited for up to <see cref="LockWait"/>.
    /// </summary>
    private FileStream LockStore()
    {
        var path = Path.Combine(Root, LockFile);
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (waited.Elapsed < LockWait)
            {
                Thread.Sleep(20);
            }
            catch (IOException e)
            {
                throw new IOException($"The model store '{Root}' stayed locked by another writer for {LockWait.TotalSeconds:F0} s ({path}).", e);
            }
        }
    }

    private int ReadPointer()
    {
        var pointer = Path.Combine(Root, CurrentFile);
        if (File.Exists(pointer))
        {
            var name = File.ReadAllText(pointer).Trim();
            int v = TryParseVersion(name);
            if (v > 0)
            {
                AtomicDirectory.Recover(VersionDirectory(v));
                if (ModelDirectory.IsModelDirectory(VersionDirectory(v))) return v;
            }
            Log.CurrentPointerStale(_logger, pointer, name);
        }
        return Versions().DefaultIfEmpty(0).Max();
    }

    private int Seed()
    {
        if (Settings.InitialModelDirectory is { } source)
        {
            using var initial = ModelDirectory.Load(source, Device).Model;
            var meta = ModelDirectory.ReadMeta(source);
            meta.Tokenizer ??= _tokenizer.Describe();
            ModelDirectory.Save(VersionDirectory(1), initial, meta);
            Log.ModelSeeded(_logger, Root, Path.GetFullPath(source));
        }
        else if (Settings.InitialPreset is { } preset)
        {
            var config = OuroConfig.FromPreset(preset, _tokenizer.VocabSize);
            config.EosTokenId ??= _tokenizer.EndOfTextId;
            using var generator = new Generator((ulong)Settings.InitialSeed);
            using var lm = new OuroForCausalLM(config, Device, generator: generator);
            ModelDirectory.Save(VersionDirectory(1), lm, new ModelMeta { Tokenizer = _tokenizer.Describe() });
            Log.ModelSeeded(_logger, Root, "preset " + preset);
        }
        else
        {
            throw new InvalidOperationException(
                $"The model store '{Root}' holds no model version. Set ModelStoreOptions.InitialModelDirectory (a LoopRpt model directory " +
                "to import) or ModelStoreOptions.InitialPreset (e.g. 'tiny') to create version 1.");
        }
        WritePointer(1);
        return 1;
    }

    /// <summary>Deletes the oldest versions beyond <see cref="ModelStoreOptions.KeepVersions"/>, never the current or the just-published one.</summary>
    private void Prune(int current, int published)
    {
        var all = Versions().Where(v => v != current && v != published).ToList();
        if (published != current) all.Add(published);      // counted, kept
        foreach (var v in all.Take(Math.Max(0, all.Count - (Settings.KeepVersions - 1))).Where(v => v != published))
        {
            Delete(VersionDirectory(v));
            Log.VersionPruned(_logger, VersionDirectory(v), Settings.KeepVersions);
        }
    }

    private static void Delete(string dir)
    {
        var doomed = dir + DeletingMarker + Guid.NewGuid().ToString("N")[..8];
        Directory.Move(dir, doomed);                          // atomic: the version disappears as a whole
        Directory.Delete(doomed, recursive: true);
    }

    private void RemoveInterruptedDeletions()
    {
        foreach (var d in Directory.GetDirectories(Root, "v*" + DeletingMarker + "*"))
        {
            try { Directory.Delete(d, recursive: true); }
            catch (IOException) { }                            // another process serving this store is deleting it right now
        }
    }

    private static string VersionName(int version) => "v" + version.ToString("D4", CultureInfo.InvariantCulture);

    private static int TryParseVersion(string name)
        => name.Length >= 5 && name[0] == 'v' && name[1..].All(char.IsAsciiDigit)
           && int.TryParse(name[1..], NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : 0;
}

/// <summary>A served model with a reference count (<see cref="LeaseCount"/>): the store holds one reference while it is current, each lease one more.</summary>
internal sealed class ServedModel
{
    private readonly LeaseCount _count;

    public ServedModel(OpenedModel loaded, int version, Action<int> onDisposed)
    {
        Loaded = loaded;
        Version = version;
        _count = new LeaseCount(() =>
        {
            loaded.Dispose();
            onDisposed(version);
        });
    }

    public OpenedModel Loaded { get; }
    public int Version { get; }

    public bool TryAddRef() => _count.TryAddRef();

    public void Release() => _count.Release();
}

/// <summary>
/// A scorer's hold on one model version. The model stays alive until the lease is disposed, even if a newer version is
/// promoted meanwhile. Use the model for inference only (no_grad, one dispose scope per call on the calling thread);
/// never train or modify it.
/// </summary>
public sealed class ModelLease : IDisposable
{
    private readonly ServedModel _served;
    private int _released;

    internal ModelLease(ServedModel served) => _served = served;

    /// <summary>The leased model.</summary>
    public OuroForCausalLM Model => Live().Loaded.Model;

    /// <summary>Its <c>meta.json</c> (training history, metrics, tokenizer description).</summary>
    public ModelMeta Meta => Live().Loaded.Meta!;

    /// <summary>Its tokenizer (the registered one when the version describes it, else the one described).</summary>
    public TextCodec Codec => Live().Loaded.Codec!;

    /// <summary>Its version in the store.</summary>
    public int Version => _served.Version;

    /// <summary>Its directory in the store.</summary>
    public string Directory => _served.Loaded.Directory;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) _served.Release();
    }

    private ServedModel Live()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _released) != 0, this);
        return _served;
    }
}
