using LoopRpt.Checkpoints;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Models;

/// <summary>Text ↔ token ids for a loaded model: the LoopRpt tokenizer stored in meta.json, or an HF tokenizer.json.</summary>
public sealed class TextCodec
{
    private readonly Func<string, int[]> _encode;
    private readonly Func<IEnumerable<int>, string> _decode;

    private TextCodec(Func<string, int[]> encode, Func<IEnumerable<int>, string> decode, int? bos, int? eos, string description)
    {
        _encode = encode;
        _decode = decode;
        BosTokenId = bos;
        EosTokenId = eos;
        Description = description;
    }

    /// <summary>The id prepended to every document (so its first token is scored), if the tokenizer has one.</summary>
    public int? BosTokenId { get; }
    /// <summary>The end-of-text id, if any (generation stops there; documents are joined with it for training).</summary>
    public int? EosTokenId { get; }
    /// <summary>What the codec is (for reports).</summary>
    public string Description { get; }

    /// <summary>Content ids of <paramref name="text"/>, with the BOS id first when <paramref name="addBos"/> and one exists.</summary>
    public int[] Encode(string text, bool addBos)
    {
        var ids = _encode(text);
        return addBos && BosTokenId is { } b ? [b, .. ids] : ids;
    }

    /// <summary>Text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => _decode(ids);

    /// <summary>Wraps a LoopRpt tokenizer.</summary>
    public static TextCodec From(LoopRptTokenizer t)
        => new(s => t.Encode(s), t.Decode, t.BosTokenId, t.EosTokenId, $"{t.Spec.Kind} ({t.VocabularySize} tokens)");

    /// <summary>Wraps a Hugging Face tokenizer.json with the config's special ids.</summary>
    public static TextCodec From(HfTokenizer t, OuroConfig config)
        => new(s => [.. t.Encode(s)], t.Decode, config.BosTokenId, config.EosTokenId, $"tokenizer.json ({t.VocabularySize} tokens)");

    /// <summary>
    /// Reads <paramref name="path"/> as a LoopRpt tokenizer file (written by <c>looprpt tokenizer</c>) or, failing that, as a
    /// Hugging Face <c>tokenizer.json</c> whose special ids come from <paramref name="config"/>.
    /// </summary>
    public static TextCodec LoadFile(string path, OuroConfig config)
    {
        if (!File.Exists(path)) throw CliException.Input($"Tokenizer file '{path}' does not exist.");
        string json = File.ReadAllText(path);
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(json)));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException or KeyNotFoundException or InvalidOperationException)
        {
            try
            {
                return From(HfTokenizer.Load(path), config);
            }
            catch (InvalidDataException hf)
            {
                throw CliException.Model($"'{path}' is neither a LoopRpt tokenizer file ({e.Message}) nor a supported tokenizer.json ({hf.Message}).", hf);
            }
        }
    }

    /// <summary>Reads a tokenizer file written by <c>looprpt tokenizer</c> (TokenizerSpec JSON) or an HF tokenizer.json.</summary>
    public static LoopRptTokenizer LoadSpecFile(string path)
    {
        if (!File.Exists(path)) throw CliException.Input($"Tokenizer file '{path}' does not exist.");
        try
        {
            return LoopRptTokenizer.Create(TokenizerSpec.FromJson(File.ReadAllText(path)));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException)
        {
            throw CliException.Model($"'{path}' is not a LoopRpt tokenizer file (write one with `looprpt tokenizer`): {e.Message}", e);
        }
    }
}

/// <summary>A model loaded for evaluation, scoring or generation, with its tokenizer.</summary>
public sealed class ModelSession : IDisposable
{
    private ModelSession(OuroForCausalLM model, TextCodec? codec, string directory, ModelMeta? meta)
    {
        Model = model;
        Codec = codec;
        Directory = directory;
        Meta = meta;
    }

    /// <summary>The model (owned by this session).</summary>
    public OuroForCausalLM Model { get; }
    /// <summary>The tokenizer, or null when the directory describes none.</summary>
    public TextCodec? Codec { get; }
    /// <summary>Where the model came from.</summary>
    public string Directory { get; }
    /// <summary>LoopRpt metadata (null for a Hugging Face directory).</summary>
    public ModelMeta? Meta { get; }

    /// <summary>
    /// The tokenizer of <paramref name="tokenizerFile"/> when one is given (see <see cref="TextCodec.LoadFile"/>), else the
    /// model's own (null when the directory describes none).
    /// </summary>
    public TextCodec? CodecOrFile(string? tokenizerFile) => tokenizerFile is null ? Codec : TextCodec.LoadFile(tokenizerFile, Model.Config);

    /// <summary>The tokenizer, or an input error naming what is missing.</summary>
    public TextCodec RequireCodec()
        => Codec ?? throw CliException.Model($"Model directory '{Directory}' has no tokenizer (no 'tokenizer' in meta.json and no tokenizer.json); train the model with `looprpt train` or add a tokenizer.json.");

    /// <summary>
    /// Loads a LoopRpt model directory, a checkpoint root (its latest step) or a Hugging Face Ouro directory.
    /// Failures become <see cref="CliException"/>s: missing → input error, corrupt/incompatible → model error, NaN/Inf
    /// weights → numerical error.
    /// </summary>
    public static ModelSession Load(string directory, string device, string dtype, TextWriter? warnings = null)
    {
        if (!System.IO.Directory.Exists(directory)) throw CliException.Input($"Model directory '{directory}' does not exist.");
        var dir = directory;
        if (!File.Exists(Path.Combine(dir, ModelDirectory.ConfigFile)) && new CheckpointManager(dir).Latest() is { } latest) dir = latest;
        if (!OuroCheckpoint.IsCheckpointDirectory(dir))
            throw CliException.Model($"'{directory}' is not a model directory: expected config.json with model.safetensors (a LoopRpt or Hugging Face Ouro directory) or a checkpoint folder with a 'latest' step.");
        var dev = Devices.Resolve(device);
        var type = Devices.ParseDType(dtype);
        try
        {
            var ckpt = OuroCheckpoint.Load(dir, new OuroLoadOptions { Device = dev, DType = type, OnWarning = w => warnings?.WriteLine("warning: " + w) });
            var model = ckpt.DetachModel();
            // A model with NaN/Inf weights would score NaN or argmax garbage: refuse it before any work (exit code 6).
            if (NonFiniteCheck.Parameters(model) is { Count: > 0 } bad)
            {
                model.Dispose();
                throw CliException.Numerical(NonFiniteCheck.Weights(bad, dir).Message);
            }
            Devices.ForModel(model);
            ModelMeta? meta = ModelDirectory.IsModelDirectory(dir) ? ModelDirectory.ReadMeta(dir) : null;
            TextCodec? codec = null;
            if (meta?.Tokenizer is { } spec) codec = TextCodec.From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(spec.ToJsonString())));
            else if (ckpt.Tokenizer is { } hf) codec = TextCodec.From(hf, model.Config);
            return new ModelSession(model, codec, dir, meta);
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or NotSupportedException or System.Text.Json.JsonException)
        {
            throw CliException.Model($"Cannot load model '{dir}': {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}

/// <summary>Device, dtype and thread settings shared by every verb.</summary>
public static class Devices
{
    /// <summary>"cpu", "cuda", "cuda:N" (CUDA needs a CUDA build of TorchSharp; see README "GPU").</summary>
    public static Device Resolve(string device)
    {
        NativeOrThrow();
        try
        {
            return TorchNative.ResolveDevice(device, fallbackToCpu: false);
        }
        catch (ArgumentOutOfRangeException)
        {
            throw CliException.Usage($"--device '{device}' is not a device: expected cpu, cuda or cuda:N.");
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(ExitCodes.EnvironmentError, e.Message, e);
        }
    }

    /// <summary>float32 or bfloat16.</summary>
    public static ScalarType ParseDType(string dtype) => dtype.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => throw CliException.Usage($"--dtype '{dtype}' is not supported: expected float32 or bfloat16."),
    };

    /// <summary>Loads the native library or fails with the diagnosis (exit code <see cref="ExitCodes.EnvironmentError"/>).</summary>
    public static void NativeOrThrow()
    {
        try
        {
            TorchNative.EnsureLoaded();
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(ExitCodes.EnvironmentError, e.Message + " Run `looprpt env` for details.", e);
        }
    }

    [ThreadStatic] private static int? _requestedThreads;
    [ThreadStatic] private static long _largestModel;

    /// <summary>
    /// Sets libtorch's intra-op threads: <paramref name="threads"/> (--threads) when positive, else the automatic choice
    /// of <see cref="ThreadPolicy"/> from the free cores, refined by <see cref="ForModel"/> once the model's size is known.
    /// </summary>
    internal static ThreadChoice SetThreads(int threads)
    {
        if (threads < 0) throw CliException.Usage($"--threads must be 0 (automatic) or more, got {threads}.");
        NativeOrThrow();
        _requestedThreads = threads;
        _largestModel = 0;
        return Apply(ThreadPolicy.Resolve(threads, parameters: null));
    }

    /// <summary>
    /// With automatic threads (--threads 0, the default), applies the choice for the largest model this verb has loaded
    /// or built; with --threads N it only returns that choice. Before <see cref="SetThreads"/> it does nothing.
    /// </summary>
    internal static ThreadChoice? ForModel(Model.OuroForCausalLM model)
    {
        if (_requestedThreads is not { } requested) return null;
        _largestModel = Math.Max(_largestModel, model.Config.ParameterCount());
        return Apply(ThreadPolicy.Resolve(requested, _largestModel));
    }

    private static ThreadChoice Apply(ThreadChoice choice)
    {
        if (get_num_threads() != choice.Threads) set_num_threads(choice.Threads);
        return choice;
    }
}
