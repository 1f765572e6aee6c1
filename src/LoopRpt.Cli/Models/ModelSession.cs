using LoopRpt.Checkpoints;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tokenization;

namespace LoopRpt.Cli.Models;

/// <summary>A model opened for evaluation, scoring or generation, with its tokenizer (the core's <see cref="OpenedModel"/>).</summary>
public sealed class ModelSession : IDisposable
{
    private readonly OpenedModel _opened;

    private ModelSession(OpenedModel opened) => _opened = opened;

    /// <summary>The model (owned by this session).</summary>
    public OuroForCausalLM Model => _opened.Model;
    /// <summary>The tokenizer, or null when the directory describes none.</summary>
    public TextCodec? Codec => _opened.Codec;
    /// <summary>The model directory read (a checkpoint's latest step, a store's current version).</summary>
    public string Directory => _opened.Directory;
    /// <summary>LoopRpt metadata (null for a Hugging Face directory).</summary>
    public ModelMeta? Meta => _opened.Meta;

    /// <summary>
    /// The tokenizer of <paramref name="tokenizerFile"/> when one is given (a LoopRpt tokenizer file or a Hugging Face
    /// tokenizer.json, <see cref="TextCodec.Load"/>), else the model's own (null when the directory describes none).
    /// </summary>
    public TextCodec? CodecOrFile(string? tokenizerFile)
    {
        if (tokenizerFile is null) return Codec;
        try
        {
            return TextCodec.Load(tokenizerFile, Model.Config);
        }
        catch (FileNotFoundException e)
        {
            throw CliException.Input(e.Message);
        }
        catch (InvalidDataException e)
        {
            throw CliException.Model(e.Message, e);
        }
    }

    /// <summary>The tokenizer, or an input error naming what is missing.</summary>
    public TextCodec RequireCodec()
        => Codec ?? throw CliException.Model($"Model directory '{Directory}' has no tokenizer (no 'tokenizer' in meta.json and no tokenizer.json); train the model with `looprpt train` or add a tokenizer.json.");

    /// <summary>
    /// Opens a model with the core's <see cref="ModelOpener"/> (a LoopRpt model directory, a checkpoint root, a model store
    /// or one of its versions, or a Hugging Face Ouro directory), refusing NaN/Inf weights. Only the CLI's exit codes are
    /// added here: missing → input error, not a model / corrupt / incompatible → model error, NaN/Inf weights → numerical error.
    /// </summary>
    public static ModelSession Load(string directory, string device, string dtype, TextWriter? warnings = null, string bf16Compute = "auto")
    {
        var options = new ModelOpenOptions
        {
            Device = Devices.Resolve(device), DType = Devices.ParseDType(dtype), BFloat16Compute = Devices.ParseBFloat16Compute(bf16Compute),
            CheckFiniteWeights = true, OnWarning = w => warnings?.WriteLine("warning: " + w),
        };
        string dir;
        try
        {
            dir = ModelOpener.Resolve(directory);
        }
        catch (DirectoryNotFoundException e)
        {
            throw CliException.Input(e.Message);
        }
        catch (InvalidDataException e)
        {
            throw CliException.Model(e.Message, e);
        }
        OpenedModel opened;
        try
        {
            opened = ModelOpener.Open(dir, options);
        }
        catch (NotFiniteNumberException e)
        {
            throw CliException.Numerical(e.Message, e);
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or NotSupportedException or System.Text.Json.JsonException)
        {
            throw CliException.Model($"Cannot load model '{dir}': {e.Message}", e);
        }
        Devices.ForModel(opened.Model);
        return new ModelSession(opened);
    }

    /// <inheritdoc/>
    public void Dispose() => _opened.Dispose();
}
