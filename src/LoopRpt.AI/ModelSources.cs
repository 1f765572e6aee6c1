using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.AI;

/// <summary>
/// Where <see cref="LoopRptChatClient"/> and <see cref="LoopRptEmbeddingGenerator"/> get their model: one fixed model
/// (<see cref="LoopRptModel"/>) or the served version of a hosting <see cref="ModelStore"/> (<see cref="ModelStoreSource"/>),
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
/// One model loaded from a directory — a LoopRpt model directory (its <c>meta.json</c> tokenizer), a checkpoint root
/// (its latest step) or a Hugging Face Ouro directory (its <c>tokenizer.json</c>) — served as version 1.
/// </summary>
public sealed class LoopRptModel : ILoopRptModelSource, IDisposable
{
    private LoopRptModel(OuroForCausalLM model, TextCodec codec, string modelId, string? directory)
    {
        Model = model;
        Codec = codec;
        ModelId = modelId;
        Directory = directory;
    }

    /// <summary>The model (owned: disposed with this object).</summary>
    public OuroForCausalLM Model { get; }

    /// <summary>Its tokenizer.</summary>
    public TextCodec Codec { get; }

    /// <inheritdoc/>
    public string ModelId { get; }

    /// <summary>The directory the model came from, if any.</summary>
    public string? Directory { get; }

    /// <summary>Wraps a model in memory (ownership passes to the result).</summary>
    public static LoopRptModel FromModel(OuroForCausalLM model, TextCodec codec, string modelId = "looprpt")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(codec);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelId);
        return new(model, codec, modelId, null);
    }

    /// <summary>Loads a model directory onto <paramref name="device"/> ("cpu", "cuda", "cuda:N").</summary>
    /// <param name="directory">LoopRpt model directory, checkpoint root, or Hugging Face Ouro directory.</param>
    /// <param name="device">Device to load on.</param>
    /// <param name="modelId">Name reported to clients (default: the directory's name).</param>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="InvalidDataException">It is not a model directory, or it describes no tokenizer.</exception>
    public static LoopRptModel Load(string directory, string device = "cpu", string? modelId = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        TorchNative.EnsureLoaded();
        if (!System.IO.Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        var dir = directory;
        if (!File.Exists(Path.Combine(dir, ModelDirectory.ConfigFile)) && new CheckpointManager(dir).Latest() is { } latest) dir = latest;
        if (!OuroCheckpoint.IsCheckpointDirectory(dir))
            throw new InvalidDataException($"'{directory}' is not a model directory: expected config.json with model.safetensors (a LoopRpt or Hugging Face Ouro directory) or a checkpoint folder with a 'latest' step.");
        var dev = TorchNative.ResolveDevice(device, fallbackToCpu: false);
        var ckpt = OuroCheckpoint.Load(dir, new OuroLoadOptions { Device = dev, DType = ScalarType.Float32 });
        var model = ckpt.DetachModel();
        try
        {
            TextCodec codec;
            if (ModelDirectory.IsModelDirectory(dir) && ModelDirectory.ReadMeta(dir).Tokenizer is { } spec) codec = TokenizerServiceExtensions.CodecOf(spec);
            else if (ckpt.Tokenizer is { } hf) codec = TextCodec.From(hf, model.Config);
            else throw new InvalidDataException($"Model directory '{dir}' has no tokenizer (no 'tokenizer' in meta.json and no tokenizer.json).");
            var name = modelId ?? Path.GetFileName(Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar));
            return new LoopRptModel(model, codec, string.IsNullOrWhiteSpace(name) ? "looprpt" : name, dir);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public LoopRptModelLease Acquire() => new(Model, Codec, 1);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}

/// <summary>
/// The served version of a hosting <see cref="ModelStore"/>: each lease holds one version (a promotion swaps the model
/// for later leases; the old one is disposed when its last lease ends). The tokenizer is the store's
/// <see cref="ITokenizerService"/> when the version's <c>meta.json</c> describes that one (or none), else the one described.
/// </summary>
public sealed class ModelStoreSource : ILoopRptModelSource
{
    private readonly ModelStore _store;
    private readonly TextCodec _fallback;
    private readonly System.Text.Json.Nodes.JsonObject _fallbackDescription;
    private readonly Dictionary<int, TextCodec> _codecs = [];

    /// <summary>Serves <paramref name="store"/>'s current version.</summary>
    public ModelStoreSource(ModelStore store, ITokenizerService tokenizer, string modelId = "looprpt")
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _fallback = (tokenizer ?? throw new ArgumentNullException(nameof(tokenizer))).ToTextCodec();
        _fallbackDescription = tokenizer.Describe();
        ArgumentException.ThrowIfNullOrWhiteSpace(modelId);
        ModelId = modelId;
    }

    /// <inheritdoc/>
    public string ModelId { get; }

    /// <inheritdoc/>
    public LoopRptModelLease Acquire()
    {
        var lease = _store.Acquire();
        try
        {
            TextCodec codec;
            lock (_codecs)
            {
                if (!_codecs.TryGetValue(lease.Version, out codec!))
                    _codecs[lease.Version] = codec = lease.Meta.Tokenizer is { } d && !System.Text.Json.Nodes.JsonNode.DeepEquals(d, _fallbackDescription)
                        ? TokenizerServiceExtensions.CodecOf(d) : _fallback;
            }
            return new LoopRptModelLease(lease.Model, codec, lease.Version, lease.Dispose);
        }
        catch
        {
            lease.Dispose();
            throw;
        }
    }
}
