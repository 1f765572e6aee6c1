using System.Text.Json.Nodes;
using LoopRpt.Checkpoints;
using LoopRpt.Cli.Display;
using LoopRpt.Cli.Models;
using LoopRpt.Data;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Tokenization;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Commands;

/// <summary>The shape of a model trained from scratch: a preset with optional overrides.</summary>
internal sealed record ModelShape(string Preset, int? Loops, int? HiddenSize, int? Layers);

/// <summary>A tokenizer ready for training: the codec, its description for meta.json, and its vocabulary size.</summary>
internal sealed record TrainingTokenizer(TextCodec Codec, JsonObject Spec, int VocabularySize)
{
    /// <summary>Learns a byte-level BPE tokenizer on <paramref name="docs"/>.</summary>
    public static TrainingTokenizer Learn(IReadOnlyList<string> docs, int vocabularySize, CancellationToken ct)
    {
        var t = LoopRptTokenizer.Train(docs, new ByteLevelBpeTrainerOptions { VocabularySize = vocabularySize }, ct);
        return From(t);
    }

    /// <summary>The tokenizer a model directory or checkpoint recorded in its meta.json, or null.</summary>
    public static TrainingTokenizer? Of(ModelMeta meta)
    {
        if (meta.Tokenizer is not { } spec) return null;
        var t = LoopRptTokenizer.Create(TokenizerSpec.FromJson(spec.ToJsonString()));
        return new(TextCodec.From(t), spec.DeepClone().AsObject(), t.VocabularySize);       // the description as recorded
    }

    public static TrainingTokenizer From(LoopRptTokenizer t) => new(TextCodec.From(t), t.Spec.ToJsonObject(), t.VocabularySize);

    /// <summary>A tokenizer file written by <c>looprpt tokenizer</c> (a <see cref="TokenizerSpec"/>).</summary>
    public static TrainingTokenizer FromFile(string path)
    {
        if (!File.Exists(path)) throw CliException.Input($"Tokenizer file '{path}' does not exist.");
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(File.ReadAllText(path))));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException)
        {
            throw CliException.Model($"'{path}' is not a LoopRpt tokenizer file (write one with `looprpt tokenizer`): {e.Message}", e);
        }
    }
}

/// <summary>
/// What <c>train</c> and <c>experiment</c> share to train a model from text: the packed token stream, a new model from a
/// preset, the trainer run under the progress display, and the saved model directory.
/// </summary>
internal static class ModelTraining
{
    /// <summary>The documents as one stream, joined by the core's rule (<see cref="DocumentTokens"/>), checked to fill one window.</summary>
    public static int[] TokenStream(IReadOnlyList<string> docs, TextCodec codec, int sequenceLength)
    {
        if (codec.BosTokenId is null) throw CliException.Model("The tokenizer has no end-of-text token to separate documents.");
        var stream = new List<int>();
        foreach (var doc in docs) codec.AppendDocument(stream, doc);
        if (stream.Count < sequenceLength + 1)
            throw CliException.Input($"The corpus has {stream.Count} tokens; a training window of --seq-len {sequenceLength} needs at least {sequenceLength + 1}. Add text or lower --seq-len.");
        return [.. stream];
    }

    /// <summary>A vocabulary size for checking a shape before the tokenizer exists (the context does not depend on it).</summary>
    public const int PlaceholderVocabulary = 512;

    /// <summary>
    /// The vocabulary of a BPE tokenizer learned on the corpus, one default for <c>tokenizer</c>, <c>train</c> and
    /// <c>experiment</c>: 512, the size of the tiny preset's embedding.
    /// </summary>
    public const int DefaultVocabulary = 512;

    /// <summary>The config of a new model (usage errors name the option at fault).</summary>
    public static OuroConfig Config(ModelShape shape, int vocabularySize)
    {
        OuroConfig config;
        try
        {
            config = OuroConfig.FromPreset(shape.Preset, vocabularySize);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw CliException.Usage($"--preset: {e.Message.Split(" (Parameter")[0]}");
        }
        if (shape.Loops is { } loops) config.TotalUtSteps = CommonOptions.AtLeast(loops, 1, "--loops");
        if (shape.HiddenSize is { } h) config.HiddenSize = CommonOptions.AtLeast(h, 8, "--hidden-size");
        if (shape.Layers is { } l) config.NumHiddenLayers = CommonOptions.AtLeast(l, 1, "--layers");
        try
        {
            return config.Validate();
        }
        catch (ArgumentException e)
        {
            throw CliException.Usage($"The model shape is invalid: {e.Message}");
        }
    }

    /// <summary>A new model initialized from <paramref name="seed"/> (a local generator).</summary>
    public static OuroForCausalLM NewModel(ModelShape shape, int vocabularySize, Device device, ScalarType dtype, long seed)
    {
        var config = Config(shape, vocabularySize);
        using var gen = new Generator((ulong)seed);
        var lm = new OuroForCausalLM(config, device, dtype, gen);
        Devices.ForModel(lm);
        return lm;
    }

    /// <summary>
    /// Trains <paramref name="stages"/> under the progress display; <paramref name="options"/> gets the display's progress.
    /// A plan that does not match the checkpoint is a model error; a cancellation with checkpoints says how to resume.
    /// The stages' objectives are disposed. <paramref name="monitor"/>, when given, collects the stage summaries.
    /// </summary>
    public static TrainingResult Train(CliContext ctx, ProgressMode mode, OuroForCausalLM lm, ITokenBatchSource source,
                                       IReadOnlyList<TrainingStage> stages, TrainerOptions options, string resumeHint, TrainingMonitor? monitor = null)
    {
        try
        {
            return TrainingDisplay.Run(ctx, mode, stages.Select(s => (s.Objective.Name, s.Steps)).ToArray(), progress =>
            {
                options.Progress = progress;
                return new LoopedLmTrainer(options).Train(lm, source, stages, ctx.CancellationToken);
            }, monitor: monitor);
        }
        catch (InvalidOperationException e) when (e is not TrainingDivergedException
                                                   && (e.Message.Contains("plan", StringComparison.Ordinal) || e.Message.Contains("resume", StringComparison.OrdinalIgnoreCase)))
        {
            throw CliException.Model(e.Message, e);
        }
        catch (OperationCanceledException) when (options.CheckpointDirectory is not null)
        {
            ctx.Error.WriteLine($"Cancelled; {resumeHint} (checkpoints in '{options.CheckpointDirectory}').");
            throw;
        }
        finally
        {
            foreach (var st in stages) st.Objective.Dispose();
        }
    }

    /// <summary>
    /// Saves the trained model with the trainer's meta (<see cref="TrainingResult.Meta"/>: history with the plan appended,
    /// step, tokens, metrics); the tokenizer goes into meta.json (or, for a Hugging Face tokenizer, as tokenizer.json beside it).
    /// </summary>
    public static void Save(string output, OuroForCausalLM lm, TrainingResult result, JsonObject? tokenizer, byte[]? hfTokenizer = null)
    {
        var meta = result.Meta.Clone();
        meta.Tokenizer = tokenizer;
        ModelDirectory.Save(output, lm, meta, hfTokenizer is null ? null : dir => File.WriteAllBytes(Path.Combine(dir, HfTokenizer.FileName), hfTokenizer));
    }
}
