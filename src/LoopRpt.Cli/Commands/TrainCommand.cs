using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using LoopRpt.Checkpoints;
using LoopRpt.Cli.Display;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Data;
using LoopRpt.Interop;
using LoopRpt.Objectives;
using LoopRpt.Tokenization;
using LoopRpt.Training;
using Spectre.Console;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt train</c>: any stage sequence (pretrain, gate, looprpt) from scratch (a preset, the tokenizer's vocabulary),
/// from a model directory (<c>--init</c>), or resuming the latest checkpoint (<c>--resume</c>); saves a model directory.
/// </summary>
internal static class TrainCommand
{
    private sealed class Opts
    {
        public Option<string[]> Input { get; } = CommonOptions.Input();
        public Option<string> Column { get; } = CommonOptions.Column();
        public Option<DocumentSplit> Documents { get; } = CommonOptions.Documents();
        public Option<string> Out { get; } = new("--out", "-o") { Description = "Model directory to write (config.json, model.safetensors, meta.json with the tokenizer).", Required = true };
        public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer file from `looprpt tokenizer` (default: learn one on the corpus, see --vocab-size)." };
        public Option<int> VocabSize { get; } = new("--vocab-size") { Description = "Vocabulary of the BPE learned when no --tokenizer or --init is given (the same default as `looprpt tokenizer`).", DefaultValueFactory = _ => ModelTraining.DefaultVocabulary };
        public Option<string?> Init { get; } = new("--init") { Description = "Continue training a model directory (its tokenizer and config are used)." };
        public Option<string> Preset { get; } = new("--preset") { Description = "Model shape when training from scratch: tiny, small, ouro-1.4b, ouro-2.6b.", DefaultValueFactory = _ => "tiny" };
        public Option<int?> Loops { get; } = new("--loops") { Description = "Loop steps T (total_ut_steps); default the preset's (4)." };
        public Option<int?> Hidden { get; } = new("--hidden-size") { Description = "Override the preset's hidden size." };
        public Option<int?> Layers { get; } = new("--layers") { Description = "Override the preset's number of layers." };
        public Option<string> Stages { get; } = new("--stages") { Description = "Plan: comma-separated KIND:STEPS[:LR][:NAME=VALUE]..., KIND = pretrain | gate | looprpt (any order), NAME an optimizer setting (LearningRate, MinLearningRateRatio, WarmupFraction, WeightDecay, Beta1, Beta2, GradientClip, GradientAccumulation) or an option of the kind's objective (pretrain: Beta, LateBeta, LateBetaFrom; gate: K, Gamma; looprpt: the LoopRptObjectiveOptions names), e.g. pretrain:300:Beta=0.05,gate:50,looprpt:40:3e-4:Rollouts=4.", DefaultValueFactory = _ => "pretrain:200,gate:50" };
        public Option<double?> Lr { get; } = new("--lr") { Description = "Peak learning rate of stages that do not give one (default: the kind's, 1e-3; looprpt stages 5e-6, published)." };
        public Option<double?> MinLrRatio { get; } = new("--min-lr-ratio") { Description = "Final rate of the cosine decay as a fraction of the peak (default 0.1; looprpt stages 0, published)." };
        public Option<double?> Warmup { get; } = new("--warmup") { Description = "Warmup fraction of each stage (default 0.03)." };
        public Option<double?> WeightDecay { get; } = new("--weight-decay") { Description = "AdamW decoupled weight decay of every stage (default 0.1; looprpt stages 0.01, published)." };
        public Option<double?> Beta1 { get; } = new("--beta1") { Description = "AdamW beta1 of every stage (default 0.9)." };
        public Option<double?> Beta2 { get; } = new("--beta2") { Description = "AdamW beta2 of every stage (default 0.95)." };
        public Option<double?> Clip { get; } = new("--clip") { Description = "Gradient-norm clip, 0: off (default 1.0)." };
        public Option<int?> Accumulation { get; } = new("--grad-accum") { Description = "Micro-batches per optimizer step (default 1)." };
        public Option<int> BatchSize { get; } = CommonOptions.BatchSize(8);
        public Option<int> SeqLen { get; } = CommonOptions.SequenceLength(TrainerOptions.Defaults.SequenceLength);
        public Option<int> Rollouts { get; } = new("--rollouts") { Description = "LoopRPT: noisy latent rollouts per batch (G) of looprpt stages that do not give Rollouts=.", DefaultValueFactory = _ => 8 };
        public Option<double> Sigma { get; } = new("--sigma") { Description = "LoopRPT: latent noise standard deviation of looprpt stages that do not give Sigma=.", DefaultValueFactory = _ => 0.1 };
        public Option<long> Seed { get; } = new("--seed") { Description = "Seed of initialization, batches and objective randomness.", DefaultValueFactory = _ => 1 };
        public Option<string> Device { get; } = CommonOptions.Device();
        public Option<string> DType { get; } = CommonOptions.DType();
        public Option<int> Threads { get; } = CommonOptions.Threads();
        public Option<string?> CheckpointDir { get; } = new("--checkpoint-dir") { Description = "Write checkpoints (weights, optimizer, trainer state) here; needed by --resume." };
        public Option<int> CheckpointEvery { get; } = new("--checkpoint-every") { Description = "Steps between checkpoints (0: end of each stage only).", DefaultValueFactory = _ => 0 };
        public Option<bool> Resume { get; } = new("--resume") { Description = "Continue from the latest checkpoint in --checkpoint-dir (same plan required)." };
        public Option<int> LogEvery { get; } = new("--log-every") { Description = "Steps between progress reports.", DefaultValueFactory = _ => 10 };
        public Option<double> SpikeFactor { get; } = new("--spike-factor")
        {
            Description = "Stop (exit 6) when the logged loss is above max(this × its running median, median + 1) for --spike-patience reports in a row; 0: off.",
            DefaultValueFactory = _ => TrainerOptions.Defaults.SpikeFactor,
        };
        public Option<int> SpikePatience { get; } = new("--spike-patience") { Description = "Logged losses in a row above the spike threshold that stop training.", DefaultValueFactory = _ => TrainerOptions.Defaults.SpikePatience };
        public Option<int> SpikeWindow { get; } = new("--spike-window") { Description = "Sane logged losses whose median is the spike rule's baseline.", DefaultValueFactory = _ => TrainerOptions.Defaults.SpikeWindow };
        public Option<ProgressMode> Progress { get; } = new("--progress") { Description = "Auto (live on a terminal, plain lines when redirected), Live, Plain or None.", DefaultValueFactory = _ => ProgressMode.Auto };

        public IEnumerable<Option> All => [Input, Column, Documents, Out, Tokenizer, VocabSize, Init, Preset, Loops, Hidden, Layers, Stages, Lr, MinLrRatio, Warmup, WeightDecay, Beta1, Beta2, Clip,
                                          Accumulation, BatchSize, SeqLen, Rollouts, Sigma, Seed, Device, DType, Threads, CheckpointDir, CheckpointEvery, Resume, LogEvery,
                                          SpikeFactor, SpikePatience, SpikeWindow, Progress];
    }

    public static Command Create()
    {
        var o = new Opts();
        return CommonOptions.Verb("train", "Train a looped LM: any sequence of pretrain (Ouro Stage I), gate (Stage II) and looprpt stages.", o.All, pr => Run(pr, o));
    }

    /// <summary>The trainer stages <c>train</c> would run for these arguments (parsed and validated the same way).</summary>
    internal static TrainingStage[] StagesFor(params string[] args)
    {
        var o = new Opts();
        var cmd = new Command("train");
        foreach (var opt in o.All) cmd.Add(opt);
        var pr = cmd.Parse(args);
        return StagePlan.ToStages(Plan(pr, o));
    }

    /// <summary>
    /// The plan, bound into core stage definitions: the command's optimizer options apply to every stage that does not
    /// set its own; options given nowhere take the defaults of each stage's kind (<see cref="OptimizerDefaults"/>: looprpt
    /// stages get the published LoopRPT settings). <c>--rollouts</c>, <c>--sigma</c> and <c>--seed</c> are looprpt parameters.
    /// </summary>
    private static IReadOnlyList<(StageDefinition Definition, string Text)> Plan(ParseResult pr, Opts o)
    {
        var command = new StageDefinition
        {
            Kind = "", LearningRate = pr.GetValue(o.Lr), MinLearningRateRatio = pr.GetValue(o.MinLrRatio), WarmupFraction = pr.GetValue(o.Warmup),
            WeightDecay = pr.GetValue(o.WeightDecay), Beta1 = pr.GetValue(o.Beta1), Beta2 = pr.GetValue(o.Beta2), GradientClip = pr.GetValue(o.Clip),
            GradientAccumulation = pr.GetValue(o.Accumulation),
        };
        try
        {
            command.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw CliException.Usage($"{OptionOf(e.ParamName)}: {e.Message.Split(" (Parameter '")[0]}");
        }
        int rollouts = CommonOptions.AtLeast(pr.GetValue(o.Rollouts), 2, "--rollouts");
        double sigma = pr.GetValue(o.Sigma) is var s and >= 0 ? s : throw CliException.Usage("--sigma must be non-negative.");
        var C = CultureInfo.InvariantCulture;
        var looprpt = new Dictionary<string, string>
        {
            [nameof(LoopRptObjectiveOptions.Rollouts)] = rollouts.ToString(C), [nameof(LoopRptObjectiveOptions.Sigma)] = sigma.ToString("R", C),
            [nameof(LoopRptObjectiveOptions.Seed)] = pr.GetValue(o.Seed).ToString(C),
        };
        return StagePlan.Parse(pr.GetValue(o.Stages)!, command, kind => kind == ObjectiveKindRegistry.LoopRpt ? looprpt : null);
    }

    /// <summary>The command option of a <see cref="StageDefinition"/> setting.</summary>
    private static string OptionOf(string? setting) => setting switch
    {
        nameof(StageDefinition.LearningRate) => "--lr", nameof(StageDefinition.MinLearningRateRatio) => "--min-lr-ratio",
        nameof(StageDefinition.WarmupFraction) => "--warmup", nameof(StageDefinition.WeightDecay) => "--weight-decay",
        nameof(StageDefinition.Beta1) => "--beta1", nameof(StageDefinition.Beta2) => "--beta2",
        nameof(StageDefinition.GradientClip) => "--clip", _ => "--grad-accum",
    };

    private static int Run(ParseResult pr, Opts o)
    {
        var ctx = CliContext.Require();
        var C = CultureInfo.InvariantCulture;
        var plan = Plan(pr, o);
        int batch = CommonOptions.AtLeast(pr.GetValue(o.BatchSize), 1, "--batch-size");
        int seqLen = CommonOptions.AtLeast(pr.GetValue(o.SeqLen), 2, "--seq-len");
        var trainerOptions = CommonOptions.Checked(new TrainerOptions
        {
            LogEvery = pr.GetValue(o.LogEvery), CheckpointEvery = pr.GetValue(o.CheckpointEvery), SpikeFactor = pr.GetValue(o.SpikeFactor),
            SpikePatience = pr.GetValue(o.SpikePatience), SpikeWindow = pr.GetValue(o.SpikeWindow), OnCancel = CancellationBehavior.CheckpointAndThrow,
        }, p => p switch
        {
            nameof(TrainerOptions.LogEvery) => "--log-every", nameof(TrainerOptions.CheckpointEvery) => "--checkpoint-every",
            nameof(TrainerOptions.SpikeFactor) => "--spike-factor", nameof(TrainerOptions.SpikePatience) => "--spike-patience", _ => "--spike-window",
        });
        foreach (var st in StagePlan.ToStages(plan)) st.Objective.Dispose();      // validates the optimizer and LoopRPT options before any work
        var ckDir = pr.GetValue(o.CheckpointDir);
        bool resume = pr.GetValue(o.Resume);
        if (resume && ckDir is null) throw CliException.Usage("--resume needs --checkpoint-dir (the folder of the run to continue).");
        var init = pr.GetValue(o.Init);
        if (init is not null && pr.GetValue(o.Tokenizer) is not null) throw CliException.Usage("--init brings its own tokenizer; do not combine it with --tokenizer.");
        if (init is not null && (pr.GetValue(o.Loops) is not null || pr.GetValue(o.Hidden) is not null || pr.GetValue(o.Layers) is not null))
            throw CliException.Usage("--init continues a model as it is; --loops, --hidden-size and --layers apply to new models only.");
        var output = OutputPaths.ModelFolder(pr.GetValue(o.Out)!, "--out");
        if (ckDir is not null) OutputPaths.Folder(ckDir, "--checkpoint-dir");
        var shape = new ModelShape(pr.GetValue(o.Preset)!, pr.GetValue(o.Loops), pr.GetValue(o.Hidden), pr.GetValue(o.Layers));
        if (init is null) CommonOptions.FitsContext(seqLen, ModelTraining.Config(shape, ModelTraining.PlaceholderVocabulary).MaxPositionEmbeddings);
        long seed = pr.GetValue(o.Seed);

        Devices.SetThreads(pr.GetValue(o.Threads));
        var device = Devices.Resolve(pr.GetValue(o.Device)!);
        var dtype = Devices.ParseDType(pr.GetValue(o.DType)!);
        var docs = Corpus.Read(pr.GetValue(o.Input)!, pr.GetValue(o.Documents), pr.GetValue(o.Column));
        var clock = Stopwatch.StartNew();

        // Tokenizer: the checkpoint's (resume) > the initial model's (--init; LoopRpt meta or HF tokenizer.json) >
        // a tokenizer file > one learned on the corpus.
        string? resumeFrom = resume ? new CheckpointManager(ckDir!).Latest() : null;
        var initSession = init is not null ? ModelSession.Load(init, pr.GetValue(o.Device)!, pr.GetValue(o.DType)!, ctx.Error) : null;
        TextCodec? codec = null;
        JsonObject? spec = null;
        byte[]? hfTokenizer = null;
        int vocab = 0;
        var baseMeta = new ModelMeta();
        if (initSession is not null)
        {
            CommonOptions.FitsContext(seqLen, initSession.Model.Config.MaxPositionEmbeddings);
            baseMeta = initSession.Meta?.Clone() ?? new ModelMeta();
            codec = initSession.RequireCodec();
            spec = initSession.Meta?.Tokenizer;
            if (spec is null) hfTokenizer = File.ReadAllBytes(Path.Combine(initSession.Directory, HfTokenizer.FileName));
        }
        if (resumeFrom is not null && TrainingTokenizer.Of(ModelDirectory.ReadMeta(resumeFrom)) is { } saved)
            (codec, spec, vocab) = (saved.Codec, saved.Spec, saved.VocabularySize);
        else if (codec is null)
        {
            if (resumeFrom is not null && pr.GetValue(o.Tokenizer) is null)
                throw CliException.Model($"Checkpoint '{resumeFrom}' has no tokenizer in meta.json; pass the --init model or --tokenizer file the run started from.");
            var t = pr.GetValue(o.Tokenizer) is { } tokFile ? TrainingTokenizer.FromFile(tokFile)
                : TrainingTokenizer.Learn(docs, CommonOptions.AtLeast(pr.GetValue(o.VocabSize), 257, "--vocab-size"), ctx.CancellationToken);
            (codec, spec, vocab) = (t.Codec, t.Spec, t.VocabularySize);
        }
        baseMeta.Tokenizer = spec;
        var stream = ModelTraining.TokenStream(docs, codec, seqLen);

        using var lm = initSession?.Model ?? ModelTraining.NewModel(shape, vocab, device, dtype, seed);
        if (stream.Max() >= lm.Config.VocabSize)
            throw CliException.Model($"The tokenizer produces id {stream.Max()}, but the model's vocab_size is {lm.Config.VocabSize}: they do not belong together.");
        var source = new PackedTokenSource(stream, batch, seqLen, seed);
        var stages = StagePlan.ToStages(plan);
        var threads = Devices.ForModel(lm)!;
        ctx.Output.WriteLine(string.Create(C, $"train documents={docs.Count} tokens={stream.Length} vocab={lm.Config.VocabSize} params={lm.UniqueParameters().Sum(p => p.Param.numel())} " +
                                              $"loops={lm.Config.TotalUtSteps} plan={string.Join(",", StagePlan.KindsAndSteps(plan).Select(p => $"{p.Kind}:{p.Steps}"))} device={device.type} resume={(resumeFrom ?? "no")} " +
                                              $"threads={threads.Threads} ({threads.Reason})"));
        var monitor = new TrainingMonitor(StagePlan.KindsAndSteps(plan));
        (trainerOptions.CheckpointDirectory, trainerOptions.Resume, trainerOptions.Seed, trainerOptions.BaseMeta) = (ckDir, resume, seed, baseMeta);
        var result = ModelTraining.Train(ctx, pr.GetValue(o.Progress), lm, source, stages, trainerOptions,
            "resume with the same command and --resume", monitor);
        // A Hugging Face tokenizer travels as its tokenizer.json beside the weights (read back by OuroCheckpoint.Load).
        ModelTraining.Save(output, lm, result, spec, hfTokenizer);
        WriteSummary(ctx, result, monitor, threads, clock.Elapsed, output);
        return ExitCodes.Success;
    }

    /// <summary>
    /// One <c>stage ...</c> line per stage (its loss under its own name, the LM loss comparable across stages and with
    /// held-out cross-entropy, tokens/s and for LoopRPT the compute per token) and the <c>summary ...</c> line; on a
    /// terminal the live display's last frame already shows each stage's numbers, and one plain sentence precedes them.
    /// </summary>
    private static void WriteSummary(CliContext ctx, TrainingResult r, TrainingMonitor monitor, ThreadChoice threads, TimeSpan elapsed, string output)
    {
        var C = CultureInfo.InvariantCulture;
        var stageLines = monitor.StageLines();
        var slow = monitor.Slowdowns;
        if (ctx.Interactive && AnsiConsole.Profile.Capabilities.Interactive)
        {
            AnsiConsole.MarkupLine(Markup.Escape(string.Create(C, $"{(r.Completed ? "completed" : "stopped")}: {r.GlobalStep} steps, {r.TokensSeen:N0} tokens, {elapsed.TotalSeconds:F1} s, {threads.Threads} thread(s); model {output}")));
        }
        foreach (var line in stageLines) ctx.Output.WriteLine(line);
        var last = monitor.LastStageFields();
        ctx.Output.WriteLine(string.Create(C, $"summary completed={r.Completed.ToString().ToLowerInvariant()} global_step={r.GlobalStep} tokens={r.TokensSeen} ") +
                             (last.Length > 0 ? last + " " : "") +
                             string.Create(C, $"threads={threads.Threads} ") + (slow.Count > 0 ? string.Create(C, $"slowdown={slow.Min(s => s.Slowdown!.Value):0.00} ") : "") +
                             string.Create(C, $"seconds={elapsed.TotalSeconds:F1} model={output}"));
    }
}
