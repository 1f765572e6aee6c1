using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;

namespace LoopRpt.Inference;

/// <summary>
/// Where a serving face (the Microsoft.Extensions.AI chat client and embedding generator, the server) gets its model: one
/// fixed model (<see cref="LoopRptModel"/>) or the served version of a hosting model store (<c>LoopRpt.Hosting.ModelStoreSource</c>),
/// so a retrained model can be promoted while requests flow. Every request works on one lease from start to end, so
/// its answer comes from a single model version.
/// </summary>
public interface ILoopRptModelSource
{
    /// <summary>A name for the models of this source (OpenAI's <c>model</c> field).</summary>
    string ModelId { get; }

    /// <summary>A hold on the current model; dispose it when done (the model stays alive until then).</summary>
    LoopRptModelLease Acquire();
}

/// <summary>A hold on one model version with its tokenizer.</summary>
public sealed class LoopRptModelLease : IDisposable
{
    private readonly Action? _release;
    private int _released;

    /// <summary>Creates a lease; <paramref name="release"/> runs once, on the first <see cref="Dispose"/>.</summary>
    public LoopRptModelLease(OuroForCausalLM model, TextCodec codec, int version, Action? release = null)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        Codec = codec ?? throw new ArgumentNullException(nameof(codec));
        Version = version;
        _release = release;
    }

    /// <summary>The model (read-only use: no_grad inference).</summary>
    public OuroForCausalLM Model { get; }

    /// <summary>Its tokenizer.</summary>
    public TextCodec Codec { get; }

    /// <summary>The model version (1 for a fixed model; the store version otherwise).</summary>
    public int Version { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) _release?.Invoke();
    }
}

/// <summary>
/// The reference count behind the leases on one model: its owner holds one reference and each lease one more; the
/// release action (disposing the model, whose modules own native memory and held Scalars) runs when the last one is
/// released, so a model is never disposed while a lease on another thread can still use it.
/// </summary>
public sealed class LeaseCount
{
    private readonly Action _onLastRelease;
    private int _refs = 1;

    /// <summary>A count holding the owner's reference; <paramref name="onLastRelease"/> runs once, on the last release.</summary>
    public LeaseCount(Action onLastRelease) => _onLastRelease = onLastRelease ?? throw new ArgumentNullException(nameof(onLastRelease));

    /// <summary>Adds a reference (a lease); false when the last one was already released (the model is gone).</summary>
    public bool TryAddRef()
    {
        while (true)
        {
            int r = Volatile.Read(ref _refs);
            if (r == 0) return false;
            if (Interlocked.CompareExchange(ref _refs, r + 1, r) == r) return true;
        }
    }

    /// <summary>Releases one reference; the last one runs the release action.</summary>
    /// <exception cref="InvalidOperationException">Released more often than acquired.</exception>
    public void Release()
    {
        int r = Interlocked.Decrement(ref _refs);
        if (r == 0) _onLastRelease();
        else if (r < 0) throw new InvalidOperationException("A model was released more often than it was acquired.");
    }
}

/// <summary>
/// One model, opened by <see cref="ModelOpener"/> or given in memory, served as version 1. <see cref="Dispose"/> disposes
/// the model once the last lease on it has ended (a request still running at shutdown finishes on it).
/// </summary>
public sealed class LoopRptModel : ILoopRptModelSource, IDisposable
{
    private readonly LeaseCount _leases;
    private int _disposed;

    private LoopRptModel() => _leases = new LeaseCount(() => Model.Dispose());

    /// <summary>The model (owned: disposed with this object).</summary>
    public OuroForCausalLM Model { get; private init; } = null!;

    /// <summary>Its tokenizer.</summary>
    public TextCodec Codec { get; private init; } = null!;

    /// <inheritdoc/>
    public string ModelId { get; private init; } = "looprpt";

    /// <summary>The directory the model came from, if any.</summary>
    public string? Directory { get; private init; }

    /// <summary>Wraps a model in memory (ownership passes to the result).</summary>
    public static LoopRptModel FromModel(OuroForCausalLM model, TextCodec codec, string modelId = "looprpt")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(codec);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelId);
        return new() { Model = model, Codec = codec, ModelId = modelId };
    }

    /// <summary>Opens a model (<see cref="ModelOpener.Open"/>, float32) onto <paramref name="device"/> ("cpu", "cuda", "cuda:N").</summary>
    /// <param name="directory">LoopRpt model directory, checkpoint root, model store (root or version), or Hugging Face Ouro directory.</param>
    /// <param name="device">Device to load on.</param>
    /// <param name="modelId">Name reported to clients (default: the directory's name).</param>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="InvalidDataException">It is not a model directory, or it describes no tokenizer.</exception>
    public static LoopRptModel Load(string directory, string device = "cpu", string? modelId = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        TorchNative.EnsureLoaded();
        var dev = TorchNative.ResolveDevice(device, fallbackToCpu: false);
        using var opened = ModelOpener.Open(directory, new ModelOpenOptions { Device = dev, DType = TorchSharp.torch.ScalarType.Float32, RequireTokenizer = true });
        var name = modelId ?? Path.GetFileName(Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar));
        var codec = opened.Codec!;
        return new() { Model = opened.DetachModel(), Codec = codec, ModelId = string.IsNullOrWhiteSpace(name) ? "looprpt" : name, Directory = opened.Directory };
    }

    /// <inheritdoc/>
    /// <exception cref="ObjectDisposedException">This source was disposed.</exception>
    public LoopRptModelLease Acquire()
        => Volatile.Read(ref _disposed) == 0 && _leases.TryAddRef() ? new(Model, Codec, 1, _leases.Release) : throw new ObjectDisposedException(nameof(LoopRptModel));

    /// <summary>Disposes the model now, or when the last lease on it ends; later <see cref="Acquire"/> calls fail.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) _leases.Release();
    }
}
