using LoopRpt.Checkpoints;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>Options of <see cref="ModelOpener.Open"/>.</summary>
public sealed class ModelOpenOptions
{
    /// <summary>Device of the loaded model (default CPU).</summary>
    public Device? Device { get; init; }

    /// <summary>
    /// Parameter dtype: <see cref="ScalarType.Float32"/> or <see cref="ScalarType.BFloat16"/>. Null (default): the stored
    /// dtype of a LoopRpt model directory (its <c>meta.json</c>), float32 for a Hugging Face directory.
    /// </summary>
    public ScalarType? DType { get; init; }

    /// <summary>How bfloat16 weights compute on a CPU (default <see cref="BFloat16Compute.Auto"/>).</summary>
    public BFloat16Compute BFloat16Compute { get; init; } = BFloat16Compute.Auto;

    /// <summary>Refuse weights holding NaN or infinity (<see cref="NotFiniteNumberException"/>) before any work. Default false.</summary>
    public bool CheckFiniteWeights { get; init; }

    /// <summary>Fail with <see cref="InvalidDataException"/> when the directory describes no tokenizer. Default false.</summary>
    public bool RequireTokenizer { get; init; }

    /// <summary>The tokenizer to use instead of the one the directory describes (e.g. hosting's registered tokenizer), or null.</summary>
    public TextCodec? Codec { get; init; }

    /// <summary>Called with each warning as it is found (also collected in <see cref="OpenedModel.Warnings"/>).</summary>
    public Action<string>? OnWarning { get; init; }
}

/// <summary>A model opened by <see cref="ModelOpener.Open"/>: the model, its LoopRpt metadata and its tokenizer.</summary>
public sealed class OpenedModel : IDisposable
{
    private bool _detached;

    internal OpenedModel() { }

    /// <summary>The model; owned by this object until <see cref="DetachModel"/>.</summary>
    public OuroForCausalLM Model { get; internal init; } = null!;

    /// <summary>The <c>meta.json</c> of a LoopRpt model directory; null for a Hugging Face directory.</summary>
    public ModelMeta? Meta { get; internal init; }

    /// <summary>The tokenizer (<see cref="ModelOpenOptions.Codec"/>, the <c>meta.json</c> description, or tokenizer.json), or null.</summary>
    public TextCodec? Codec { get; internal init; }

    /// <summary>Problems that did not stop the load (wrong BOS/EOS ids, list-valued ids, unknown model_type, ...).</summary>
    public IReadOnlyList<string> Warnings { get; internal init; } = [];

    /// <summary>The model directory actually read (full path: a checkpoint's latest step, a store's current version).</summary>
    public string Directory { get; internal init; } = "";

    /// <summary>Hands the model to the caller: disposing this object no longer disposes it.</summary>
    public OuroForCausalLM DetachModel()
    {
        _detached = true;
        return Model;
    }

    /// <summary>Disposes the model unless it was detached.</summary>
    public void Dispose()
    {
        if (!_detached) Model.Dispose();
    }
}

/// <summary>
/// The one model opener of every face (library, CLI, hosting, server and Microsoft.Extensions.AI, ML.NET). It reads
/// <list type="bullet">
/// <item><description>a LoopRpt model directory (config.json, model.safetensors, meta.json with its tokenizer description);</description></item>
/// <item><description>a Hugging Face Ouro directory (config.json, single or sharded safetensors, tokenizer.json);</description></item>
/// <item><description>a checkpoint root (a <c>latest</c> pointer: its latest step);</description></item>
/// <item><description>a model store root (a <c>current</c> pointer naming a version folder: that version), or a version folder itself.</description></item>
/// </list>
/// Config: <see cref="ModelDirectory.ReadConfig"/>; weights: <see cref="ModelWeights.LoadModel"/>; tokenizer: <see cref="TextCodec"/>.
/// </summary>
public static class ModelOpener
{
    /// <summary>The file of a model store root naming its served version folder (e.g. <c>v0003</c>).</summary>
    public const string CurrentPointerFile = "current";

    /// <summary>
    /// The model directory <paramref name="directory"/> stands for: itself when it holds config.json, a checkpoint root's
    /// latest step, or a store root's current version; interrupted atomic saves are recovered first.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="InvalidDataException">It is none of the layouts <see cref="ModelOpener"/> reads.</exception>
    public static string Resolve(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        AtomicDirectory.Recover(directory);
        if (!System.IO.Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        var dir = directory;
        if (!File.Exists(Path.Combine(dir, ModelDirectory.ConfigFile)))
        {
            if (new CheckpointManager(dir).Latest() is { } latest) dir = latest;
            else if (CurrentVersion(dir) is { } current) dir = current;
        }
        if (!OuroCheckpoint.IsCheckpointDirectory(dir))
            throw new InvalidDataException(
                $"'{directory}' is not a model directory: expected config.json with model.safetensors (a LoopRpt or Hugging Face Ouro directory), " +
                $"a checkpoint folder with a '{CheckpointManager.LatestFile}' step, or a model store with a '{CurrentPointerFile}' version.");
        return Path.GetFullPath(dir);
    }

    /// <summary>Opens the model <paramref name="directory"/> stands for (<see cref="Resolve"/>) with its tokenizer.</summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException">A file the layout needs is missing.</exception>
    /// <exception cref="InvalidDataException">Not a model directory; corrupt or mismatched files; no tokenizer when required.</exception>
    /// <exception cref="NotSupportedException">The config asks for a feature the model does not implement.</exception>
    /// <exception cref="NotFiniteNumberException">NaN/Inf weights with <see cref="ModelOpenOptions.CheckFiniteWeights"/>.</exception>
    public static OpenedModel Open(string directory, ModelOpenOptions? options = null)
    {
        options ??= new ModelOpenOptions();
        TorchNative.EnsureLoaded();
        var dir = Resolve(directory);
        var meta = ModelDirectory.IsModelDirectory(dir) ? ModelDirectory.ReadMeta(dir) : null;
        var dtype = options.DType ?? (meta?.DType == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32);
        var checkpoint = OuroCheckpoint.Load(dir, new OuroLoadOptions
        {
            Device = options.Device, DType = dtype, BFloat16Compute = options.BFloat16Compute, OnWarning = options.OnWarning,
        });
        var model = checkpoint.DetachModel();
        try
        {
            if (options.CheckFiniteWeights && NonFiniteCheck.Parameters(model) is { Count: > 0 } bad) throw NonFiniteCheck.Weights(bad, dir);
            var codec = options.Codec
                ?? (meta?.Tokenizer is { } description ? TextCodec.FromDescription(description)
                    : checkpoint.Tokenizer is { } hf ? TextCodec.From(hf, model.Config) : null);
            if (codec is null && options.RequireTokenizer)
                throw new InvalidDataException($"Model directory '{dir}' has no tokenizer (no 'tokenizer' in meta.json and no tokenizer.json).");
            return new OpenedModel { Model = model, Meta = meta, Codec = codec, Warnings = checkpoint.Warnings, Directory = dir };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The version folder a store root's <see cref="CurrentPointerFile"/> names, when it is a model directory.</summary>
    private static string? CurrentVersion(string root)
    {
        var pointer = Path.Combine(root, CurrentPointerFile);
        if (!File.Exists(pointer)) return null;
        var name = File.ReadAllText(pointer).Trim();
        if (name.Length == 0 || name != Path.GetFileName(name)) return null;
        var version = Path.Combine(root, name);
        AtomicDirectory.Recover(version);
        return ModelDirectory.IsModelDirectory(version) ? version : null;
    }
}
