using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Checkpoints;
using LoopRpt.Cli.Display;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Experiments;
using LoopRpt.Model;
using LoopRpt.Training;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt experiment</c>: "does LoopRPT help on my corpus?". Trains a base model (tokenizer, Ouro Stage I + gate) on
/// <c>--input</c> unless <c>--base</c> gives one, then runs <see cref="LoopRptExperiment"/>: for each seed, Stage I
/// controls at equal steps and equal compute, LoopRPT and its variants, all evaluated on the <c>--heldout</c> text; writes
/// report.md, results.csv and Pareto band plots. Rerunning the same command resumes where it stopped.
/// </summary>
internal static class ExperimentCommand
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    private sealed class Opts
    {
        private static readonly PlateauRule Plateau = new();         // the base budget's defaults

        public Option<string[]> Input { get; } = CommonOptions.Input();
        public Option<string[]> HeldOut { get; } = new("--heldout")
        {
            Description = "Held-out text for evaluation (same kinds of input as --input); repeatable.", Required = true, Arity = ArgumentArity.OneOrMore,
        };
        public Option<string> Column { get; } = CommonOptions.Column();
        public Option<DocumentSplit> Documents { get; } = CommonOptions.Documents();
        public Option<string> Out { get; } = new("--out", "-o") { Description = "Folder for the base model, the runs, report.md, results.csv and the plots; an existing experiment there is resumed.", DefaultValueFactory = _ => Path.Combine("runs", "experiment") };
        public Option<int> Seeds { get; } = new("--seeds") { Description = "Seeds 1..N (batch order and LoopRPT noise); 3 or more give an uncertainty estimate.", DefaultValueFactory = _ => ExperimentOptions.Defaults.Seeds };
        public Option<int> BaseSeeds { get; } = new("--base-seeds")
        {
            Description = "Train N base models (seeds --seed, --seed+1, ...; OUT/base, OUT/base-2, ...) and run every arm and seed from each, so that ± includes the base models' variance.",
            DefaultValueFactory = _ => 1,
        };
        public Option<string?> Base { get; } = new("--base") { Description = "Reuse a trained base model directory (Stage I + gate, with its tokenizer) instead of training one." };
        public Option<long> PretrainSteps { get; } = new("--pretrain-steps") { Description = "Stage I steps of the base model (without --base); giving it selects --base-budget steps.", DefaultValueFactory = _ => 300 };
        public Option<string?> BaseBudget { get; } = new("--base-budget")
        {
            Description = "Stage I budget of the base model: plateau (until held-out loss stops improving; the default) or steps (--pretrain-steps; the default when --pretrain-steps is given).",
        };
        public Option<int> EvalEvery { get; } = new("--eval-every") { Description = "With --base-budget plateau: Stage I steps between held-out evaluations.", DefaultValueFactory = _ => Plateau.EvaluateEvery };
        public Option<int> Patience { get; } = new("--patience") { Description = "With --base-budget plateau: evaluations in a row without improvement that stop Stage I.", DefaultValueFactory = _ => Plateau.Patience };
        public Option<double> MinDelta { get; } = new("--min-delta") { Description = "With --base-budget plateau: relative held-out loss improvement that counts.", DefaultValueFactory = _ => Plateau.MinRelativeDelta };
        public Option<long> MaxBaseSteps { get; } = new("--max-base-steps") { Description = "With --base-budget plateau: Stage I step cap (it also sizes the learning-rate schedule).", DefaultValueFactory = _ => Plateau.MaxSteps };
        public Option<long> GateSteps { get; } = new("--gate-steps") { Description = "Stage II (gate) steps of the base model (without --base).", DefaultValueFactory = _ => 50 };
        public Option<double> PretrainLr { get; } = new("--pretrain-lr") { Description = "Peak learning rate of the base model's stages.", DefaultValueFactory = _ => OptimizerDefaults.Pretraining.LearningRate };
        public Option<string> Preset { get; } = new("--preset") { Description = "Base model shape: tiny, small, ouro-1.4b, ouro-2.6b.", DefaultValueFactory = _ => "tiny" };
        public Option<int?> Loops { get; } = new("--loops") { Description = "Loop steps T of the base model (default the preset's, 4)." };
        public Option<int?> Hidden { get; } = new("--hidden-size", "--hidden") { Description = "Override the preset's hidden size." };
        public Option<int?> Layers { get; } = new("--layers") { Description = "Override the preset's number of layers." };
        public Option<int> VocabSize { get; } = new("--vocab-size", "--vocab") { Description = "Vocabulary of the BPE tokenizer learned on --input.", DefaultValueFactory = _ => ModelTraining.DefaultVocabulary };
        public Option<long> Steps { get; } = new("--steps") { Description = "Continuation steps of LoopRPT and of the equal-steps control.", DefaultValueFactory = _ => ExperimentOptions.Defaults.Steps };
        public Option<double> Lr { get; } = new("--lr") { Description = "Peak learning rate of every continuation arm (larger than LoopRPT's published 5e-6, for small young models; the other optimizer settings are the published ones).", DefaultValueFactory = _ => ExperimentOptions.Defaults.Optimizer.LearningRate };
        public Option<int> BatchSize { get; } = CommonOptions.BatchSize(8);
        public Option<int> SeqLen { get; } = CommonOptions.SequenceLength(TrainerOptions.Defaults.SequenceLength);
        public Option<string[]> Variants { get; } = new("--variant")
        {
            Description = "A LoopRPT variant NAME:KEY=VALUE,... (keys: lr, g, hard=all|top|threshold, sigma, noise, kl, ema, chunk, or any LoopRptObjectiveOptions property); repeatable.",
            Arity = ArgumentArity.ZeroOrMore,
        };
        public Option<bool> NoDefaultVariants { get; } = new("--no-default-variants") { Description = "Do not run the default variant looprpt-all-tokens (HardTokens=All)." };
        public Option<bool> NoEqualCompute { get; } = new("--no-equal-compute") { Description = "Skip the equal-compute Stage I control." };
        public Option<string> Q { get; } = CommonOptions.Thresholds(string.Join(",", LoopEvaluationOptions.Defaults.QValues.Select(v => v.ToString(C))));
        public Option<string> Buckets { get; } = CommonOptions.Buckets();
        public Option<string> Pass { get; } = CommonOptions.Pass();
        public Option<long> MaxHeldOutTokens { get; } = new("--max-heldout-tokens") { Description = "Evaluate on at most this many held-out tokens (0: all).", DefaultValueFactory = _ => 16384 };
        public Option<long> Seed { get; } = new("--seed") { Description = "Seed of the base model's initialization and batches.", DefaultValueFactory = _ => 1 };
        public Option<int> LogEvery { get; } = new("--log-every") { Description = "Steps between progress reports.", DefaultValueFactory = _ => 10 };
        public Option<int> CheckpointEvery { get; } = new("--checkpoint-every") { Description = "Steps between checkpoints of each run (an interrupted run resumes from the last).", DefaultValueFactory = _ => ExperimentOptions.Defaults.CheckpointEvery };
        public Option<string> Device { get; } = CommonOptions.Device();
        // One thread by default: the tiny default model is fastest so on a shared 2-core machine, and the measured cost ratio steadier.
        public Option<int> Threads { get; } = CommonOptions.Threads(1);
        public Option<ProgressMode> Progress { get; } = new("--progress") { Description = "Auto (live on a terminal, plain lines when redirected), Live, Plain or None.", DefaultValueFactory = _ => ProgressMode.Auto };

        public IEnumerable<Option> All => [Input, HeldOut, Column, Documents, Out, Seeds, BaseSeeds, Base, PretrainSteps, BaseBudget, EvalEvery, Patience, MinDelta, MaxBaseSteps, GateSteps, PretrainLr, Preset, Loops, Hidden, Layers,
                                          VocabSize, Steps, Lr, BatchSize, SeqLen, Variants, NoDefaultVariants, NoEqualCompute, Q, Buckets, Pass, MaxHeldOutTokens, Seed,
                                          LogEvery, CheckpointEvery, Device, Threads, Progress];
    }

    public static Command Create()
    {
        var o = new Opts();
        return CommonOptions.Verb("experiment", "Does LoopRPT help on my corpus? Multi-seed LoopRPT vs. Stage I controls (equal steps, equal compute) from one base model, with a report.",
                                  o.All, pr => Run(pr, o));
    }

    private static int Run(ParseResult pr, Opts o)
    {
        var ctx = CliContext.Require();
        var clock = Stopwatch.StartNew();

        // 1. Every option and path, before anything is trained or written.
        int batch = CommonOptions.AtLeast(pr.GetValue(o.BatchSize), 1, "--batch-size");
        int seqLen = CommonOptions.AtLeast(pr.GetValue(o.SeqLen), 2, "--seq-len");
        long maxHeldOut = pr.GetValue(o.MaxHeldOutTokens) is var m and >= 0 ? m : throw CliException.Usage("--max-heldout-tokens must be 0 (all) or more.");
        var baseOption = pr.GetValue(o.Base);
        int baseSeeds = CommonOptions.AtLeast(pr.GetValue(o.BaseSeeds), 1, "--base-seeds");
        if (baseOption is not null && baseSeeds > 1)
            throw CliException.Usage("--base-seeds trains the base models; with --base the experiment reuses one. Drop one of the two.");
        if (baseOption is not null)
        {
            var given = new Option[] { o.PretrainSteps, o.BaseBudget, o.EvalEvery, o.Patience, o.MinDelta, o.MaxBaseSteps, o.GateSteps, o.PretrainLr, o.Preset, o.Loops, o.Hidden, o.Layers, o.VocabSize }
                .Where(x => pr.GetResult(x) is { Implicit: false }).Select(x => x.Name).ToArray();
            if (given.Length > 0) throw CliException.Usage($"--base reuses a trained model; {string.Join(", ", given)} appl{(given.Length == 1 ? "ies" : "y")} only when the experiment trains its base model.");
        }
        long pretrainSteps = pr.GetValue(o.PretrainSteps) is var ps and >= 1 ? ps : throw CliException.Usage($"--pretrain-steps must be at least 1, got {pr.GetValue(o.PretrainSteps)}.");
        var plateau = BasePlateau(pr, o);
        long gateSteps = pr.GetValue(o.GateSteps) is var gs and >= 1 ? gs : throw CliException.Usage($"--gate-steps must be at least 1, got {pr.GetValue(o.GateSteps)}.");
        double pretrainLr = CommonOptions.Positive(pr.GetValue(o.PretrainLr), "--pretrain-lr");
        int vocabSize = CommonOptions.AtLeast(pr.GetValue(o.VocabSize), 257, "--vocab-size");
        var shape = new ModelShape(pr.GetValue(o.Preset)!, pr.GetValue(o.Loops), pr.GetValue(o.Hidden), pr.GetValue(o.Layers));
        if (baseOption is null && ModelTraining.Config(shape, vocabSize).TotalUtSteps < 2)
            throw CliException.Usage("--loops must be at least 2: LoopRPT rewards loop steps against each other.");
        var pending = new List<string>();
        var options = BuildOptions(pr, o, ctx, pending);
        var output = Usage(() => LoopRptExperiment.CheckOutputDirectory(OutputPaths.Folder(pr.GetValue(o.Out)!, "--out")), "--out");
        if (baseOption is null) CommonOptions.FitsContext(seqLen, ModelTraining.Config(shape, vocabSize).MaxPositionEmbeddings);
        var docs = Corpus.Read(pr.GetValue(o.Input)!, pr.GetValue(o.Documents), pr.GetValue(o.Column));
        var heldOutDocs = Corpus.Read(pr.GetValue(o.HeldOut)!, pr.GetValue(o.Documents), pr.GetValue(o.Column));
        if (baseOption is not null)
        {
            CheckBase(baseOption);
            CommonOptions.FitsContext(seqLen, ModelDirectory.ReadConfig(baseOption).MaxPositionEmbeddings);
        }
        long seed = pr.GetValue(o.Seed);
        Devices.SetThreads(pr.GetValue(o.Threads));
        var device = Devices.Resolve(pr.GetValue(o.Device)!);
        options.Device = device;
        var mode = pr.GetValue(o.Progress);

        // 2. The base models: given, trained earlier into OUT/base (OUT/base-2, ...), or trained now (resumable through OUT/base-checkpoints).
        var baseDirs = baseOption is not null ? [baseOption]
            : Enumerable.Range(1, baseSeeds).Select(b => Path.Combine(output, b == 1 ? "base" : $"base-{b}")).ToArray();
        if (plateau is not null) pretrainSteps = plateau.MaxSteps;          // the cap: it sizes the schedule
        var basePlan = StagePlan.Parse(string.Create(CultureInfo.InvariantCulture, $"pretrain:{pretrainSteps}:{pretrainLr:R},gate:{gateSteps}:{pretrainLr:R}"));
        for (int b = 0; b < baseDirs.Length && baseOption is null; b++)
        {
            var dir = baseDirs[b];
            if (ModelDirectory.IsModelDirectory(dir))
            {
                var stages = ModelDirectory.ReadMeta(dir).Stages;
                var budget = PlateauOutcome.ReadFrom(dir);
                bool same = plateau is null
                    ? budget is null && stages.SequenceEqual(StagePlan.KindsAndSteps(basePlan).Select(p => new StageRecord(p.Kind, p.Steps)))
                    : budget?.Rule == plateau && stages.Count == 2 && stages[0].Name == "pretrain" && stages[0].Steps <= plateau.MaxSteps && stages[1] == new StageRecord("gate", gateSteps);
                string wanted = plateau is null ? $"pretrain:{pretrainSteps}, gate:{gateSteps}" : $"pretrain until plateau (--eval-every {plateau.EvaluateEvery}, --patience {plateau.Patience}, --min-delta {plateau.MinRelativeDelta.ToString(C)}, --max-base-steps {plateau.MaxSteps}), gate:{gateSteps}";
                if (!same)
                    throw CliException.Usage($"'{dir}' was trained with [{string.Join(", ", stages.Select(s => $"{s.Name}:{s.Steps}"))}]{(budget is null ? "" : " until a plateau (" + budget.Reason + ")")}, not {wanted}; use another --out, or pass --base {dir} to reuse it.");
                var (have, want) = (ModelDirectory.ReadConfig(dir), ModelTraining.Config(shape, vocabSize));
                if (have.HiddenSize != want.HiddenSize || have.NumHiddenLayers != want.NumHiddenLayers || have.TotalUtSteps != want.TotalUtSteps)
                    throw CliException.Usage($"'{dir}' has hidden size {have.HiddenSize}, {have.NumHiddenLayers} layers, {have.TotalUtSteps} loops, not the {want.HiddenSize}, {want.NumHiddenLayers}, {want.TotalUtSteps} asked for; use another --out, or pass --base {dir} to reuse it.");
                ctx.Output.WriteLine($"experiment base={dir} reused=true");
            }
            else
                // Bases after the first take its tokenizer: every base reads the same continuation batches.
                TrainBase(ctx, mode, docs, dir, basePlan, plateau, shape, vocabSize, batch, seqLen, seed + b, device, pr.GetValue(o.LogEvery), options.CheckpointEvery,
                          b == 0 ? null : TrainingTokenizer.Of(ModelDirectory.ReadMeta(baseDirs[0])));
        }
        var baseDir = baseDirs[0];
        var tokenizer = TrainingTokenizer.Of(ModelDirectory.ReadMeta(baseDir))
            ?? throw CliException.Model($"Base model '{baseDir}' has no tokenizer in meta.json; train it with `looprpt train` (or let `experiment` train it).");
        var config = ModelDirectory.ReadConfig(baseDir);

        // 3. Continuation batches per seed over the training text, and the held-out windows.
        var stream = ModelTraining.TokenStream(docs, tokenizer.Codec, seqLen);
        if (stream.Max() >= config.VocabSize)
            throw CliException.Model($"The base model's tokenizer produces id {stream.Max()}, but its vocab_size is {config.VocabSize}: they do not belong together.");
        var heldOut = EvaluationInputs.Stream(heldOutDocs, tokenizer.Codec, config.VocabSize, maxHeldOut, seqLen);
        var sets = new Dictionary<string, IReadOnlyList<TokenBatch>> { ["heldout"] = LoopEvaluator.Windows(heldOut, batch, seqLen).ToList() };
        var experiment = Usage(() => new LoopRptExperiment(baseDirs, s => new PackedTokenSource(stream, batch, seqLen, s), sets, options), null);
        var plan = Usage(() => experiment.Plan(output), null);
        ctx.Output.WriteLine(string.Create(C, $"experiment out={output} base={string.Join(",", baseDirs)} seeds={options.Seeds} steps={options.Steps} arms={string.Join(",", experiment.Arms.Select(a => a.Name))} " +
                                              $"runs={plan.Count} done={plan.Count(r => r.Done)} train_tokens={stream.Length} heldout_tokens={heldOut.Length} loops={config.TotalUtSteps}"));

        // 4. The experiment, with one progress bar per arm/seed.
        ExperimentResults results;
        try
        {
            results = TrainingDisplay.Run(ctx, mode, plan.Select(r => (r.Label, r.Steps)).ToArray(),
                progress => experiment.Run(output, progress, ctx.CancellationToken), plan.Select(r => r.Done).ToArray());
        }
        catch (ArgumentException e) when (e.ParamName is "outputDirectory" or "batchSource")
        {
            // The library checks the folder against the settings it was built with before training anything.
            throw CliException.Usage(e.Message.Split(" (Parameter")[0]);
        }
        catch (OperationCanceledException)
        {
            ctx.Error.WriteLine("Cancelled; rerun the same command to resume (finished runs are kept, the interrupted one continues from its checkpoint).");
            throw;
        }
        if (!results.PremiseHolds) ctx.Error.WriteLine("warning: " + PremiseCheck.Warning + " (report.md opens with the premise check)");
        foreach (var p in results.Premise)
            ctx.Output.WriteLine(string.Create(C, $"premise set={p.EvaluationSet} bases={p.Bases} accuracy={string.Join("/", p.Accuracy.Select(m => (100 * m.Mean).ToString("F2", C)))} " +
                                                  $"nll={string.Join("/", p.NegativeLogLikelihood.Select(m => m.Mean.ToString("F3", C)))} holds={(p.Holds ? "true" : "false")}"));
        foreach (var budget in results.BaseBudgets)
        {
            var stop = budget.Plateau is { } pl ? string.Create(C, $"stopped={(pl.Plateaued ? "plateau" : "cap")} steps={pl.StepsTaken} best_step={pl.BestStep} best_loss={pl.BestLoss:F4}") : "stopped=steps";
            ctx.Output.WriteLine($"base_budget base={budget.Directory} stages={string.Join(",", budget.Stages.Select(x => $"{x.Name}:{x.Steps}"))} {stop}");
        }
        foreach (var line in pending) ctx.Output.WriteLine("experiment " + line);     // held back while the live display ran
        foreach (var a in results.Cost!.Arms)
        {
            var t = results.Timings.FirstOrDefault(x => x.Arm == a.Arm);
            ctx.Output.WriteLine(string.Create(C, $"compute arm={a.Arm} flops_per_step={a.Flops.Total:G4} steps={a.Steps} total_flops={a.TotalFlops:G4} " +
                                                  $"seconds_per_step={t?.MedianSecondsPerStep ?? double.NaN:F4} cpu_seconds_per_step={t?.CpuSecondsPerStep ?? double.NaN:F4}"));
        }
        foreach (var v in results.Verdicts.Where(v => v.Arm == ExperimentArm.LoopRptName)) ctx.Output.WriteLine("verdict " + v.Text);
        ctx.Output.WriteLine(string.Create(C, $"summary completed=true premise={(results.PremiseHolds ? "holds" : "fails")} runs_trained={results.RunsTrained} cost_ratio={results.Cost.Ratio:F2} " +
                                              $"equal_compute_steps={results.Cost.EqualComputeSteps} seconds={clock.Elapsed.TotalSeconds:F1} report={results.ReportPath} " +
                                              $"results={results.ResultsPath} plots={string.Join(",", results.PlotPaths.Select(Path.GetFileName))}"));
        return ExitCodes.Success;
    }

    /// <summary>The base's Stage I stop (null: a fixed --pretrain-steps), validated with the option names.</summary>
    private static PlateauRule? BasePlateau(ParseResult pr, Opts o)
    {
        bool Given(Option x) => pr.GetResult(x) is { Implicit: false };
        var budget = pr.GetValue(o.BaseBudget) ?? (Given(o.PretrainSteps) ? "steps" : "plateau");
        var plateauOptions = new Option[] { o.EvalEvery, o.Patience, o.MinDelta, o.MaxBaseSteps }.Where(Given).Select(x => x.Name).ToArray();
        switch (budget)
        {
            case "steps":
                if (plateauOptions.Length > 0) throw CliException.Usage($"--base-budget steps trains --pretrain-steps; {string.Join(", ", plateauOptions)} appl{(plateauOptions.Length == 1 ? "ies" : "y")} only with --base-budget plateau.");
                return null;
            case "plateau":
                if (Given(o.PretrainSteps)) throw CliException.Usage("--pretrain-steps sets a fixed Stage I budget; with --base-budget plateau, --max-base-steps caps it.");
                var rule = new PlateauRule { EvaluateEvery = pr.GetValue(o.EvalEvery), Patience = pr.GetValue(o.Patience), MinRelativeDelta = pr.GetValue(o.MinDelta), MaxSteps = pr.GetValue(o.MaxBaseSteps) };
                try
                {
                    rule.Validate();
                }
                catch (ArgumentOutOfRangeException e)
                {
                    var name = e.ParamName switch
                    {
                        nameof(PlateauRule.EvaluateEvery) => "--eval-every", nameof(PlateauRule.Patience) => "--patience",
                        nameof(PlateauRule.MinRelativeDelta) => "--min-delta", _ => "--max-base-steps",
                    };
                    throw CliException.Usage($"{name}: {e.Message.Split(Environment.NewLine)[0].Split(" (Parameter")[0]} Got {e.ActualValue}.");
                }
                return rule;
            default:
                throw CliException.Usage($"--base-budget must be plateau or steps, got '{budget}'.");
        }
    }

    private static ExperimentOptions BuildOptions(ParseResult pr, Opts o, CliContext ctx, List<string> pending)
    {
        var variants = new List<ExperimentVariant>();
        if (!pr.GetValue(o.NoDefaultVariants)) variants.AddRange(ExperimentOptions.Defaults.Variants);
        foreach (var spec in pr.GetValue(o.Variants) ?? [])
        {
            try
            {
                variants.Add(ExperimentVariant.Parse(spec));
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                var message = e.Message.Split(" (Parameter")[0];
                throw CliException.Usage(e is FormatException ? $"--variant: {message}" : $"--variant '{spec}': {message}");
            }
        }
        var mode = pr.GetValue(o.Progress);
        bool live = mode is ProgressMode.Auto or ProgressMode.Live && ctx.Interactive;
        var options = new ExperimentOptions
        {
            Seeds = pr.GetValue(o.Seeds), Steps = pr.GetValue(o.Steps), LearningRate = pr.GetValue(o.Lr), Variants = variants,
            EqualCompute = !pr.GetValue(o.NoEqualCompute), QValues = CommonOptions.ParseThresholds(pr.GetValue(o.Q)!),
            Buckets = CommonOptions.ParseBuckets(pr.GetValue(o.Buckets)!),
            Pass = CommonOptions.ParsePass(pr.GetValue(o.Pass)!),
            LogEvery = pr.GetValue(o.LogEvery), CheckpointEvery = pr.GetValue(o.CheckpointEvery),
            Log = mode == ProgressMode.None ? null : live ? pending.Add : line => ctx.Output.WriteLine("experiment " + line),
        };
        if (!options.QValues.Contains(options.ReportQ)) options.QValues = [.. options.QValues, options.ReportQ];
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw CliException.Usage(OptionMessage(e));
        }
        return options;
    }

    /// <summary>Library option names → the command line's.</summary>
    private static string OptionMessage(ArgumentException e)
    {
        var name = e.ParamName switch
        {
            nameof(ExperimentOptions.Seeds) => "--seeds", nameof(ExperimentOptions.Steps) => "--steps",
            nameof(ExperimentOptions.LearningRate) => "--lr", nameof(ExperimentOptions.LogEvery) => "--log-every",
            nameof(ExperimentOptions.CheckpointEvery) => "--checkpoint-every", nameof(ExperimentOptions.Variants) => "--variant",
            nameof(ExperimentOptions.QValues) => "--q", _ => null,
        };
        var message = e.Message.Split(" (Parameter")[0];
        if (e is ArgumentOutOfRangeException { ActualValue: { } v }) message = message.Split(Environment.NewLine)[0] + string.Create(C, $" Got {v}.");
        return name is null ? message : $"{name}: {message}";
    }

    private static T Usage<T>(Func<T> f, string? option)
    {
        try
        {
            return f();
        }
        catch (ArgumentException e)
        {
            throw CliException.Usage((option is null ? "" : option + ": ") + e.Message.Split(" (Parameter")[0]);
        }
    }

    private static void CheckBase(string dir)
    {
        if (!Directory.Exists(dir)) throw CliException.Input($"Base model directory '{dir}' does not exist.");
        if (!ModelDirectory.IsModelDirectory(dir))
            throw CliException.Model($"'{dir}' is not a LoopRpt model directory (config.json, model.safetensors, meta.json); --base takes a model written by `looprpt train` or by an earlier `looprpt experiment` (OUT/base).");
        ModelMeta meta;
        try
        {
            meta = ModelDirectory.ReadMeta(dir);
            if (ModelDirectory.ReadConfig(dir).TotalUtSteps < 2) throw CliException.Model($"Base model '{dir}' has a single loop step; LoopRPT needs at least 2.");
        }
        catch (InvalidDataException e)
        {
            throw CliException.Model($"Cannot use base model '{dir}': {e.Message}", e);
        }
        if (meta.Tokenizer is null) throw CliException.Model($"Base model '{dir}' has no tokenizer in meta.json; train it with `looprpt train`.");
    }

    /// <summary>
    /// Learns the tokenizer (or takes the interrupted run's) and trains Stage I + gate into <paramref name="baseDir"/>. With
    /// <paramref name="plateau"/>, Stage I runs until held-out loss stops improving on the last tenth of the training stream
    /// (at most 16,384 tokens, not trained on by the base; docs/experiment.md §4.4); its model waits in BASE-stage1 for the
    /// gate stage, so an interruption of the gate stage does not repeat it.
    /// </summary>
    private static void TrainBase(CliContext ctx, ProgressMode mode, IReadOnlyList<string> docs, string baseDir, IReadOnlyList<(StageDefinition Definition, string Text)> plan,
                                  PlateauRule? plateau, ModelShape shape, int vocabSize, int batch, int seqLen, long seed, TorchSharp.torch.Device device, int logEvery,
                                  int checkpointEvery, TrainingTokenizer? given = null)
    {
        var ckDir = baseDir + "-checkpoints";
        var stage1Dir = baseDir + "-stage1";
        var resumeFrom = new CheckpointManager(ckDir).Latest() ?? (ModelDirectory.IsModelDirectory(stage1Dir) ? stage1Dir : null);
        var tokenizer = given ?? (resumeFrom is null ? null : TrainingTokenizer.Of(ModelDirectory.ReadMeta(resumeFrom)))
            ?? TrainingTokenizer.Learn(docs, vocabSize, ctx.CancellationToken);
        var stream = ModelTraining.TokenStream(docs, tokenizer.Codec, seqLen);
        using var lm = ModelTraining.NewModel(shape, tokenizer.VocabularySize, device, TorchSharp.torch.ScalarType.Float32, seed);
        var baseMeta = new ModelMeta { Tokenizer = tokenizer.Spec };
        var stages = StagePlan.ToStages(plan);
        ctx.Output.WriteLine(string.Create(C, $"experiment base={baseDir} training=true documents={docs.Count} tokens={stream.Length} vocab={lm.Config.VocabSize} " +
                                              $"params={lm.UniqueParameters().Sum(p => p.Param.numel())} loops={lm.Config.TotalUtSteps} plan={string.Join(",", StagePlan.KindsAndSteps(plan).Select(p => $"{p.Kind}:{p.Steps}"))} " +
                                              $"budget={(plateau is null ? "steps" : "plateau")} resume={resumeFrom ?? "no"}"));
        TrainerOptions Options(string? checkpoints, ModelMeta meta) => new()
        {
            LogEvery = logEvery, CheckpointDirectory = checkpoints, CheckpointEvery = checkpointEvery, KeepCheckpoints = 1, Resume = checkpoints is not null, Seed = seed,
            BaseMeta = meta, OnCancel = CancellationBehavior.CheckpointAndThrow,
        };
        const string hint = "rerun the same command to resume";
        PlateauOutcome? outcome = null;
        if (plateau is not null)
        {
            if (ModelDirectory.IsModelDirectory(stage1Dir))
            {
                ModelWeights.Load(lm, Path.Combine(stage1Dir, ModelWeights.FileName));
                baseMeta = ModelDirectory.ReadMeta(stage1Dir);
                outcome = PlateauOutcome.ReadFrom(stage1Dir);
            }
            else
            {
                // The validation windows: the stream's last tenth (at most 16,384 tokens), held out from the base's Stage I.
                int split = stream.Length - Math.Clamp(stream.Length / 10, seqLen + 1, 16384);
                if (split < seqLen + 1) throw CliException.Input($"The corpus has {stream.Length} tokens; --base-budget plateau holds out a tenth for validation and needs at least {2 * (seqLen + 1)}. Add text, lower --seq-len, or use --base-budget steps.");
                var validation = LoopEvaluator.Windows(stream[split..], batch, seqLen).ToList();
                var stage1 = new TrainingStage(stages[0].Objective, stages[0].Steps, stages[0].Optimizer) { StopOnPlateau = new HeldOutPlateau(plateau, validation) };
                var first = ModelTraining.Train(ctx, mode, lm, new PackedTokenSource(stream[..split], batch, seqLen, seed), [stage1], Options(null, baseMeta), hint);
                outcome = first.Plateau!;
                baseMeta = first.Meta.Clone();
                baseMeta.Tokenizer = tokenizer.Spec;
                ModelDirectory.Save(stage1Dir, lm, baseMeta);
                outcome.WriteTo(stage1Dir);
            }
            ctx.Output.WriteLine($"experiment base={baseDir} stage1: {outcome!.Reason}");
            stages = stages[1..];
        }
        var result = ModelTraining.Train(ctx, mode, lm, new PackedTokenSource(stream, batch, seqLen, seed), stages, Options(ckDir, baseMeta), hint);
        ModelTraining.Save(baseDir, lm, result, tokenizer.Spec);
        outcome?.WriteTo(baseDir);
        if (Directory.Exists(ckDir)) Directory.Delete(ckDir, recursive: true);     // the saved base model replaces them
        if (Directory.Exists(stage1Dir)) Directory.Delete(stage1Dir, recursive: true);
    }
}
