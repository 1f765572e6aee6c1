using LoopRpt.Checkpoints;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Models;

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
    /// Loads a LoopRpt model directory, a checkpoint root (its latest step) or a Hugging Face Ouro directory.
    /// Failures become <see cref="CliException"/>s: missing → input error, corrupt/incompatible → model error, NaN/Inf
    /// weights → numerical error.
    /// </summary>
    public static ModelSession Load(string directory, string device, string dtype, TextWriter? warnings = null, string bf16Compute = "auto")
    {
        if (!System.IO.Directory.Exists(directory)) throw CliException.Input($"Model directory '{directory}' does not exist.");
        var dir = directory;
        if (!File.Exists(Path.Combine(dir, ModelDirectory.ConfigFile)) && new CheckpointManager(dir).Latest() is { } latest) dir = latest;
        if (!OuroCheckpoint.IsCheckpointDirectory(dir))
            throw CliException.Model($"'{directory}' is not a model directory: expected config.json with model.safetensors (a LoopRpt or Hugging Face Ouro directory) or a checkpoint folder with a 'latest' step.");
        var dev = Devices.Resolve(device);
        var type = Devices.ParseDType(dtype);
        var compute = Devices.ParseBFloat16Compute(bf16Compute);
        try
        {
            var ckpt = OuroCheckpoint.Load(dir, new OuroLoadOptions { Device = dev, DType = type, BFloat16Compute = compute, OnWarning = w => warnings?.WriteLine("warning: " + w) });
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
            if (meta?.Tokenizer is { } spec) codec = TextCodec.FromDescription(spec);
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
