using System.Diagnostics;
using System.Globalization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Training;

namespace LoopRpt.Experiments;

/// <summary>
/// "Does LoopRPT help on my data?" as a multi-seed experiment. From one base checkpoint (Ouro Stage I + gate), for each
/// seed, it trains (a) a Stage I continuation with as many steps as LoopRPT, (b) a Stage I continuation with as much
/// wall-clock compute as LoopRPT (steps × the measured cost ratio), (c) LoopRPT with the published options and (d) any
/// LoopRPT variants; evaluates every run and the base model on every evaluation set with <see cref="LoopEvaluator"/>
/// (buckets by the base model's entropy, so all are compared on the same tokens); and writes report.md, results.csv and
/// Pareto band plots (<see cref="ExperimentSummary"/> has the statistics).
/// </summary>
/// <remarks>
/// <para>Fair comparison: all arms of a seed start from the same weights, read the same batches (the batch source is a
/// function of the seed and the global step) and use the same optimizer and schedule; the seed also drives LoopRPT's
/// rollout noise. Seeds therefore measure the spread due to data order and exploration, and differences are paired by seed.</para>
/// <para>Resumable: each arm/seed has a folder under <c>runs/</c>; a run whose evaluation is stored is skipped, an
/// interrupted one continues from its last checkpoint, and the cost ratio is stored once measured. Rerunning with more
/// seeds or another variant adds runs; other changes are refused (see <c>experiment.json</c>).</para>
/// <para>Training order per seed: equal steps, LoopRPT, variants, then equal compute (its step count needs the ratio,
/// measured from seed 1's first two runs).</para>
/// </remarks>
public sealed class LoopRptExperiment
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    private readonly string _baseDirectory;
    private readonly Func<long, ITokenBatchSource> _batches;
    private readonly IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> _sets;
    private readonly ExperimentOptions _options;
    private readonly OuroConfig _config;

    /// <summary>Creates the experiment and validates everything that can be checked without training.</summary>
    /// <param name="baseModelDirectory">The base model, saved with <see cref="ModelDirectory.Save"/> (Ouro Stage I + gate).</param>
    /// <param name="batchSource">Continuation batches for a seed (the seed sets their order); called once per arm/seed.</param>
    /// <param name="evaluationSets">Named evaluation sets, e.g. "heldout" (names: letters, digits, '.', '_', '-', '=').</param>
    /// <param name="options">Options (copied); default <see cref="ExperimentOptions"/>.</param>
    public LoopRptExperiment(string baseModelDirectory, Func<long, ITokenBatchSource> batchSource,
                             IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> evaluationSets, ExperimentOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(baseModelDirectory);
        ArgumentNullException.ThrowIfNull(batchSource);
        ArgumentNullException.ThrowIfNull(evaluationSets);
        _options = Copy(options ?? new ExperimentOptions());
        _options.Validate();

        if (!Directory.Exists(baseModelDirectory))
            throw new ArgumentException($"The base model directory '{baseModelDirectory}' does not exist.", nameof(baseModelDirectory));
        if (!ModelDirectory.IsModelDirectory(baseModelDirectory))
            throw new ArgumentException($"'{baseModelDirectory}' is not a LoopRpt model directory (config.json and meta.json); save the base model with ModelDirectory.Save.", nameof(baseModelDirectory));
        _config = ModelDirectory.ReadConfig(baseModelDirectory);
        if (_config.TotalUtSteps < 2)
            throw new ArgumentException($"The base model has total_ut_steps = {_config.TotalUtSteps}; LoopRPT rewards loop steps against each other and needs at least 2.", nameof(baseModelDirectory));
        _baseDirectory = Path.GetFullPath(baseModelDirectory);

        if (evaluationSets.Count == 0) throw new ArgumentException("At least one evaluation set is needed (e.g. \"heldout\").", nameof(evaluationSets));
        foreach (var (name, batches) in evaluationSets)
        {
            if (string.IsNullOrEmpty(name) || name.Any(ch => !(char.IsAsciiLetterOrDigit(ch) || ch is '.' or '_' or '-' or '=')) || name.Trim('.').Length == 0)
                throw new ArgumentException($"Evaluation set name '{name}' must be letters, digits, '.', '_', '-' or '=' (it names a plot file).", nameof(evaluationSets));
            if (batches is null || batches.Count == 0) throw new ArgumentException($"Evaluation set '{name}' has no batches.", nameof(evaluationSets));
            if (batches.All(b => b.TargetTokenCount == 0)) throw new ArgumentException($"Evaluation set '{name}' has no target tokens (all targets are padding).", nameof(evaluationSets));
            CheckVocabulary(batches, $"Evaluation set '{name}'", nameof(evaluationSets));
        }
        _sets = evaluationSets.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<TokenBatch>)kv.Value.ToArray());
        _batches = batchSource;
        Arms = ExperimentArm.For(_options);
    }

    /// <summary>The arms in report order.</summary>
    public IReadOnlyList<ExperimentArm> Arms { get; }

    /// <summary>The runs in training order and which of them <paramref name="outputDirectory"/> already holds (nothing is written).</summary>
    public IReadOnlyList<ExperimentRun> Plan(string outputDirectory)
    {
        var store = new ExperimentStore(CheckOutputDirectory(outputDirectory));
        var cost = KnownCost(store);
        return PlanOf(store, cost);
    }

    /// <summary>
    /// Runs (or resumes) the experiment into <paramref name="outputDirectory"/>: trains and evaluates every missing arm/seed,
    /// then writes report.md, results.csv and one Pareto band plot per evaluation set.
    /// </summary>
    /// <param name="outputDirectory">Created if missing; an existing experiment there is resumed.</param>
    /// <param name="progress">Training progress; <see cref="TrainingProgress.Stage"/> is "ARM/seed-N" and <see cref="TrainingProgress.StageIndex"/> the run's <see cref="ExperimentRun.Index"/>.</param>
    /// <param name="cancellationToken">Cancels between and inside runs (an interrupted run checkpoints and resumes next time).</param>
    /// <exception cref="ArgumentException">The output path is a file, or it holds an experiment with other settings (checked before any training).</exception>
    public ExperimentResults Run(string outputDirectory, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var store = new ExperimentStore(CheckOutputDirectory(outputDirectory));
        TorchNative.EnsureLoaded();
        var firstBatch = _batches(1)?.GetBatch(ModelDirectory.ReadMeta(_baseDirectory).Step, 0)
            ?? throw new ArgumentException("The batch source factory returned null for seed 1.", "batchSource");
        CheckVocabulary([firstBatch], "The training batches", "batchSource");
        Directory.CreateDirectory(store.Root);
        store.CheckOrWriteSettings(Settings(firstBatch));

        var clock = Stopwatch.StartNew();
        var evaluator = new LoopEvaluator(new LoopEvaluationOptions { QValues = _options.QValues, Buckets = _options.Buckets, Pass = _options.Pass });
        using var baseModel = ModelDirectory.Load(_baseDirectory, _options.Device).Model;
        var runs = new List<ArmRun> { BaseEvaluation(store, evaluator, baseModel) };
        var cost = KnownCost(store, persist: true);
        int trained = 0;
        foreach (var planned in PlanOf(store, cost))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var arm = Arms.Single(a => a.Name == planned.Arm);
            if (planned.Done)
            {
                runs.Add(LoadRun(store, planned));
                Log($"{planned.Label}: done earlier, evaluation loaded");
                continue;
            }
            long steps = planned.Steps;
            if (arm.Kind == ArmKind.Stage1EqualCompute)
            {
                cost ??= Measure(store, persist: true) ?? throw new InvalidOperationException(
                    $"The cost ratio is unknown: the seed-1 runs '{ExperimentArm.EqualStepsName}' and '{ExperimentArm.LoopRptName}' have no timing in '{store.Root}'. Delete their folders to retrain them, or set CostRatio.");
                steps = cost.EqualComputeSteps;
            }
            runs.Add(TrainAndEvaluate(store, planned with { Steps = steps }, arm, evaluator, baseModel, progress, cancellationToken));
            trained++;
            if (cost is null && Measure(store, persist: true) is { } measured)
            {
                cost = measured;
                Log(string.Create(C, $"cost ratio {cost.Ratio:F2}: median {cost.LoopRptSecondsPerStep:F3} s per LoopRPT step / {cost.Stage1SecondsPerStep:F3} s per Stage I step (seed 1; process CPU time gives {cost.CpuRatio:F2}) → {cost.EqualComputeSteps} equal-compute steps"));
            }
        }

        // Report order (base, then the arms as listed, seeds ascending): the summary compares each arm with the controls before it.
        var armOrder = Arms.Select(a => a.Name).ToList();
        runs = [.. runs.OrderBy(r => r.Arm == ExperimentArm.BaseName ? -1 : armOrder.IndexOf(r.Arm)).ThenBy(r => r.Seed)];
        var controls = Arms.Where(a => a.IsControl).Select(a => a.Name).ToArray();
        var summary = ExperimentSummary.Create(runs, controls, _options.ParetoGridStep, _options.ParetoIncludesFixedSteps);
        var report = new ExperimentReport(_options, Arms, _config, _baseDirectory, summary, runs, cost, _sets);
        var verdicts = report.Verdicts();
        var reportPath = Path.Combine(store.Root, "report.md");
        var csvPath = Path.Combine(store.Root, "results.csv");
        var plots = report.WritePlots(store.Root);
        AtomicDirectory.WriteAllText(csvPath, ExperimentReport.Csv(runs, Arms));
        AtomicDirectory.WriteAllText(reportPath, report.Markdown(verdicts, plots.Select(Path.GetFileName).ToArray()!, trained, clock.Elapsed));
        Log(string.Create(C, $"wrote {reportPath}, {csvPath} and {plots.Count} plot(s); {trained} run(s) trained in {clock.Elapsed.TotalSeconds:F0} s"));
        return new ExperimentResults(store.Root, Arms, _options.Seeds, runs, summary, cost, verdicts, trained, reportPath, csvPath, plots);
    }

    // ---- runs --------------------------------------------------------------------------------------------------------

    private List<ExperimentRun> PlanOf(ExperimentStore store, CostMeasurement? cost)
    {
        var plan = new List<ExperimentRun>();
        var order = Arms.Where(a => a.Kind != ArmKind.Stage1EqualCompute).Concat(Arms.Where(a => a.Kind == ArmKind.Stage1EqualCompute)).ToArray();
        for (int seed = 1; seed <= _options.Seeds; seed++)
            foreach (var arm in order)
            {
                long steps = arm.Kind == ArmKind.Stage1EqualCompute ? cost?.EqualComputeSteps ?? 0 : _options.Steps;
                plan.Add(new ExperimentRun(plan.Count, arm.Name, seed, steps, File.Exists(store.EvaluationFile(arm.Name, seed))));
            }
        return plan;
    }

    private ArmRun TrainAndEvaluate(ExperimentStore store, ExperimentRun planned, ExperimentArm arm, LoopEvaluator evaluator, OuroForCausalLM baseModel,
                                    IProgress<TrainingProgress>? progress, CancellationToken ct)
    {
        int seed = planned.Seed;
        var dir = store.RunDirectory(arm.Name, seed);
        Directory.CreateDirectory(dir);
        var definition = arm.DefinitionJson(planned.Steps, _options.ContinuationBeta);
        var definitionFile = store.DefinitionFile(arm.Name, seed);
        if (File.Exists(definitionFile) && File.ReadAllText(definitionFile) != definition)
            throw new ArgumentException($"'{dir}' holds a partial run of arm '{arm.Name}' with another definition (see {definitionFile}); delete that folder to train it afresh.", "outputDirectory");
        AtomicDirectory.WriteAllText(definitionFile, definition);

        var loaded = ModelDirectory.Load(_baseDirectory, _options.Device);
        using var lm = loaded.Model;
        using var objective = arm.CreateObjective(seed, _options.ContinuationBeta);
        var stage = new TrainingStage(objective, planned.Steps, _options.Optimizer with { LearningRate = arm.LearningRate });
        var checkpoints = new CheckpointManager(store.CheckpointDirectory(arm.Name, seed), keep: 1);
        long StepOf(string? checkpoint) => checkpoint is null ? loaded.Meta.Step : ModelDirectory.ReadMeta(checkpoint).Step;
        long startStep = StepOf(checkpoints.Latest());
        Log(startStep > loaded.Meta.Step
            ? $"{planned.Label}: resuming at step {startStep - loaded.Meta.Step}/{planned.Steps}"
            : $"{planned.Label}: training {planned.Steps} steps");
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            LogEvery = _options.LogEvery, CheckpointDirectory = checkpoints.Root, CheckpointEvery = _options.CheckpointEvery, KeepCheckpoints = 1,
            Resume = true, Seed = seed, BaseMeta = loaded.Meta, OnCancel = CancellationBehavior.CheckpointAndThrow,
            Progress = progress is null ? null : new Relabel(progress, planned.Label, planned.Index),
        });
        var source = new TimedSource(_batches(seed));
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        try
        {
            trainer.Train(lm, source, [stage], ct);
        }
        finally
        {
            // Only the steps this session actually trained count (resumes add up); see ExperimentStore.TimingRecord.
            store.AddTiming(arm.Name, seed, StepOf(checkpoints.Latest()) - startStep, clock.Elapsed.TotalSeconds,
                (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds, source.StepSeconds);
        }

        ct.ThrowIfCancellationRequested();
        var evaluations = _sets.ToDictionary(kv => kv.Key, kv => evaluator.Evaluate(lm, kv.Value, baseModel, planned.Label));
        var final = checkpoints.Latest();
        if (_options.KeepModels)
            ModelDirectory.Save(store.ModelDirectoryOf(arm.Name, seed), lm, final is null ? loaded.Meta : ModelDirectory.ReadMeta(final));
        ExperimentStore.Write(store.EvaluationFile(arm.Name, seed), ExperimentStore.RunFile.From(arm.Name, seed, planned.Steps, evaluations));
        DeleteCheckpoints(store, arm.Name, seed);
        Log(string.Create(C, $"{planned.Label}: evaluated, {string.Join(", ", evaluations.Select(e => $"{e.Key} s1 {100 * e.Value["All"].StepAccuracy[0]:F2} % / last {100 * e.Value["All"].LastStepAccuracy:F2} %"))}"));
        return new ArmRun(arm.Name, seed, evaluations);
    }

    private static ArmRun LoadRun(ExperimentStore store, ExperimentRun planned)
    {
        var path = store.EvaluationFile(planned.Arm, planned.Seed);
        var run = (ExperimentStore.Read<ExperimentStore.RunFile>(path) ?? throw new InvalidDataException($"'{path}' is empty.")).ToRun(path);
        DeleteCheckpoints(store, planned.Arm, planned.Seed);        // left over if the process died between the two writes
        return run;
    }

    private static void DeleteCheckpoints(ExperimentStore store, string arm, int seed)
    {
        var dir = store.CheckpointDirectory(arm, seed);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    private ArmRun BaseEvaluation(ExperimentStore store, LoopEvaluator evaluator, OuroForCausalLM baseModel)
    {
        var path = store.BaseEvaluationFile;
        if (ExperimentStore.Read<ExperimentStore.RunFile>(path) is { } cached)
        {
            Log("base: evaluation loaded");
            return cached.ToRun(path);
        }
        var evaluations = _sets.ToDictionary(kv => kv.Key, kv => evaluator.Evaluate(baseModel, kv.Value, baseModel, ExperimentArm.BaseName));
        ExperimentStore.Write(path, ExperimentStore.RunFile.From(ExperimentArm.BaseName, 0, 0, evaluations));
        Log("base: evaluated");
        return new ArmRun(ExperimentArm.BaseName, 0, evaluations);
    }

    // ---- cost ratio --------------------------------------------------------------------------------------------------

    /// <summary>The ratio given in the options, else the stored one, else one measurable from the seed-1 timings, else null.</summary>
    private CostMeasurement? KnownCost(ExperimentStore store, bool persist = false)
    {
        if (_options.CostRatio is { } given) return Cost(given, double.NaN, double.NaN, "given", double.NaN);
        if (ExperimentStore.Read<ExperimentStore.CostRecord>(store.CostFile) is { } stored)
            return Cost(stored.Ratio, stored.LoopRptSecondsPerStep, stored.Stage1SecondsPerStep, stored.Source, stored.CpuRatio);
        return Measure(store, persist);
    }

    /// <summary>Median seconds per step of seed 1's LoopRPT run over that of its equal-steps control, once both are complete.</summary>
    private CostMeasurement? Measure(ExperimentStore store, bool persist)
    {
        // Only complete runs: a partial timing would give the first (slower, warming-up) steps too much weight.
        if (!File.Exists(store.EvaluationFile(ExperimentArm.EqualStepsName, 1)) || !File.Exists(store.EvaluationFile(ExperimentArm.LoopRptName, 1))) return null;
        var stage1 = ExperimentStore.Read<ExperimentStore.TimingRecord>(store.TimingFile(ExperimentArm.EqualStepsName, 1));
        var looprpt = ExperimentStore.Read<ExperimentStore.TimingRecord>(store.TimingFile(ExperimentArm.LoopRptName, 1));
        if (stage1 is null || looprpt is null || !(stage1.SecondsPerStep > 0) || !(looprpt.SecondsPerStep > 0)) return null;
        double cpuRatio = looprpt.CpuSeconds > 0 && stage1.CpuSeconds > 0 ? looprpt.CpuSeconds / looprpt.Steps / (stage1.CpuSeconds / stage1.Steps) : double.NaN;
        var cost = Cost(looprpt.SecondsPerStep / stage1.SecondsPerStep, looprpt.SecondsPerStep, stage1.SecondsPerStep, "measured (seed 1)", cpuRatio);
        if (persist)
            ExperimentStore.Write(store.CostFile, new ExperimentStore.CostRecord
            {
                Ratio = cost.Ratio, LoopRptSecondsPerStep = cost.LoopRptSecondsPerStep, Stage1SecondsPerStep = cost.Stage1SecondsPerStep, Source = cost.Source,
                CpuRatio = cost.CpuRatio,
            });
        return cost;
    }

    private CostMeasurement Cost(double ratio, double looprpt, double stage1, string source, double cpuRatio)
        => new(ratio, looprpt, stage1, Math.Max(1, (long)Math.Round(_options.Steps * ratio, MidpointRounding.AwayFromZero)), source, cpuRatio);

    // ---- validation and settings -------------------------------------------------------------------------------------

    /// <summary>
    /// Checks that <paramref name="outputDirectory"/> can hold an experiment (not an existing file, nor under one) and
    /// returns its full path; throws <see cref="ArgumentException"/> otherwise. Nothing is created.
    /// </summary>
    public static string CheckOutputDirectory(string outputDirectory)
    {
        if (string.IsNullOrWhiteSpace(outputDirectory)) throw new ArgumentException("The output directory must be given.", nameof(outputDirectory));
        string full;
        try
        {
            full = Path.GetFullPath(outputDirectory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"The output directory '{outputDirectory}' is not a valid path: {e.Message}", nameof(outputDirectory), e);
        }
        if (File.Exists(full)) throw new ArgumentException($"The output path '{outputDirectory}' is an existing file; the experiment needs a directory.", nameof(outputDirectory));
        for (var p = Path.GetDirectoryName(full); p is not null; p = Path.GetDirectoryName(p))
            if (File.Exists(p)) throw new ArgumentException($"The output directory '{outputDirectory}' lies under '{p}', which is a file.", nameof(outputDirectory));
        return full;
    }

    private void CheckVocabulary(IEnumerable<TokenBatch> batches, string what, string parameter)
    {
        foreach (var b in batches)
        {
            long max = Math.Max(b.Inputs.DefaultIfEmpty().Max(), b.Targets.DefaultIfEmpty().Max());
            long min = Math.Min(b.Inputs.DefaultIfEmpty().Min(), b.Targets.Where(t => t != TokenBatch.IgnoreIndex).DefaultIfEmpty().Min());
            if (max >= _config.VocabSize || min < 0)
                throw new ArgumentException($"{what} hold token id {(max >= _config.VocabSize ? max : min)}, outside the base model's vocabulary [0, {_config.VocabSize}): the tokenizer does not match the model.", parameter);
        }
    }

    /// <summary>What every stored run depends on; a rerun with any of these changed is refused.</summary>
    private SortedDictionary<string, string> Settings(TokenBatch firstBatch)
    {
        var o = _options;
        var settings = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["base_model"] = ExperimentStore.HashFile(Path.Combine(_baseDirectory, ModelWeights.FileName)),
            ["batches_seed1"] = ExperimentStore.HashBatches([firstBatch]),
            ["evaluation_sets"] = string.Join(",", _sets.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}:{ExperimentStore.HashBatches(kv.Value)}")),
            ["steps"] = o.Steps.ToString(C),
            ["learning_rate"] = o.Optimizer.LearningRate.ToString("R", C),
            ["weight_decay"] = o.Optimizer.WeightDecay.ToString("R", C),
            ["warmup_fraction"] = o.Optimizer.WarmupFraction.ToString("R", C),
            ["min_learning_rate_ratio"] = o.Optimizer.MinLearningRateRatio.ToString("R", C),
            ["gradient_clip"] = o.Optimizer.GradientClip.ToString("R", C),
            ["continuation_beta"] = o.ContinuationBeta.ToString("R", C),
            ["cost_ratio"] = o.CostRatio?.ToString("R", C) ?? "measured",
            ["q_values"] = string.Join(",", o.QValues.Select(q => q.ToString("R", C))),
        };
        // Only when not the default, so that experiments stored before buckets were configurable resume unchanged.
        if (o.Buckets != EntropyBuckets.Published) settings["buckets"] = o.Buckets.ToString();
        if (o.Pass != EvaluationPass.FullDepth) settings["pass"] = "adaptive";
        var d = ExperimentOptions.Defaults.Optimizer;                  // settings that became options later: only when changed
        if (o.Optimizer.Beta1 != d.Beta1) settings["beta1"] = o.Optimizer.Beta1.ToString("R", C);
        if (o.Optimizer.Beta2 != d.Beta2) settings["beta2"] = o.Optimizer.Beta2.ToString("R", C);
        if (o.Optimizer.GradientAccumulation != d.GradientAccumulation) settings["gradient_accumulation"] = o.Optimizer.GradientAccumulation.ToString(C);
        return settings;
    }

    private void Log(string message) => _options.Log?.Invoke(message);

    private static ExperimentOptions Copy(ExperimentOptions o)
    {
        return new ExperimentOptions
        {
            Seeds = o.Seeds, Steps = o.Steps, Optimizer = o.Optimizer, ContinuationBeta = o.ContinuationBeta,
            EqualCompute = o.EqualCompute, CostRatio = o.CostRatio, Variants = o.Variants?.ToArray()!, QValues = o.QValues?.ToArray()!,
            ParetoGridStep = o.ParetoGridStep, ParetoIncludesFixedSteps = o.ParetoIncludesFixedSteps, ReportQ = o.ReportQ, LogEvery = o.LogEvery,
            CheckpointEvery = o.CheckpointEvery, KeepModels = o.KeepModels, Device = o.Device, Log = o.Log, Buckets = o.Buckets, Pass = o.Pass,
        };
    }

    /// <summary>
    /// Times optimizer steps from the outside: the trainer asks for micro-batch 0 once at the start of every step, so the
    /// interval between two such requests is one step (forward, backward, optimizer, and occasionally a report or a checkpoint).
    /// </summary>
    private sealed class TimedSource(ITokenBatchSource inner) : ITokenBatchSource
    {
        private long _last = -1;

        public List<double> StepSeconds { get; } = [];
        public int BatchSize => inner.BatchSize;
        public int SequenceLength => inner.SequenceLength;

        public TokenBatch GetBatch(long step, int microStep)
        {
            if (microStep == 0)
            {
                long now = Stopwatch.GetTimestamp();
                if (_last >= 0) StepSeconds.Add(Stopwatch.GetElapsedTime(_last, now).TotalSeconds);
                _last = now;
            }
            return inner.GetBatch(step, microStep);
        }
    }

    /// <summary>Names a trainer's reports after the run and numbers them by its place in the plan.</summary>
    private sealed class Relabel(IProgress<TrainingProgress> inner, string label, int index) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => inner.Report(value with { Stage = label, StageIndex = index });
    }
}
