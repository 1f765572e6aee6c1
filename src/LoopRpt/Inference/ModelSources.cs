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

/// <summary>One model, opened by <see cref="ModelOpener"/> or given in memory, served as version 1.</summary>
public sealed class LoopRptModel : ILoopRptModelSource, IDisposable
{
    private LoopRptModel() { }

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
    public LoopRptModelLease Acquire() => new(Model, Codec, 1);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}
