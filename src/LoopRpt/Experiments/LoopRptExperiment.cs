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
/// "Does LoopRPT help on my data?" as a multi-seed experiment. From one or more base checkpoints (Ouro Stage I + gate),
/// it first checks the premise (<see cref="PremiseCheck"/>: do the base's later loops beat loop 1?), then, for each base and
/// seed, trains (a) a Stage I continuation with as many steps as LoopRPT, (b) Stage I continuations with as many
/// forward + backward FLOPs as each LoopRPT arm (<see cref="StepFlops"/>), (c) LoopRPT with the published options and
/// (d) any LoopRPT variants; evaluates every run and the base model on every evaluation set with <see cref="LoopEvaluator"/>
/// (buckets by the base model's entropy, so all are compared on the same tokens); and writes report.md, results.csv and
/// Pareto band plots (<see cref="ExperimentSummary"/> has the statistics; the verdicts are Holm-corrected).
/// </summary>
/// <remarks>
/// <para>Fair comparison: all arms of a (base, seed) start from the same weights, read the same batches (the batch source
/// is a function of the seed and the global step) and use the same optimizer and schedule; the seed also drives LoopRPT's
/// rollout noise. Seeds measure the spread due to data order and exploration, base models the spread due to the base's
/// own training; differences are paired by (base, seed).</para>
/// <para>Resumable: each arm/seed has a folder under <c>runs/</c> (under <c>by-base/bB/runs/</c> with several bases); a run
/// whose evaluation is stored is skipped, an interrupted one continues from its last checkpoint. Rerunning with more
/// seeds or another variant adds runs; other changes are refused (see <c>experiment.json</c>).</para>
/// </remarks>
public sealed class LoopRptExperiment
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    private readonly IReadOnlyList<string> _bases;
    private readonly Func<long, ITokenBatchSource> _batches;
    private readonly IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> _sets;
    private readonly ExperimentOptions _options;
    private readonly OuroConfig _config;

    /// <summary>Creates the experiment from one base model and validates everything that can be checked without training.</summary>
    /// <param name="baseModelDirectory">The base model, saved with <see cref="ModelDirectory.Save"/> (Ouro Stage I + gate).</param>
    /// <param name="batchSource">Continuation batches for a seed (the seed sets their order); called once per arm/seed.</param>
    /// <param name="evaluationSets">Named evaluation sets, e.g. "heldout" (names: letters, digits, '.', '_', '-', '=').</param>
    /// <param name="options">Options (copied); default <see cref="ExperimentOptions"/>.</param>
    public LoopRptExperiment(string baseModelDirectory, Func<long, ITokenBatchSource> batchSource,
                             IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> evaluationSets, ExperimentOptions? options = null)
        : this([baseModelDirectory], batchSource, evaluationSets, options)
    {
    }

    /// <summary>
    /// Creates the experiment from several base models of the same shape (e.g. trained with different seeds), so that the
    /// ± of every statistic includes the base models' variance; validates everything that can be checked without training.
    /// </summary>
    /// <param name="baseModelDirectories">The base models, each saved with <see cref="ModelDirectory.Save"/>; the same config.</param>
    /// <param name="batchSource">Continuation batches for a seed (the seed sets their order); called once per arm/seed.</param>
    /// <param name="evaluationSets">Named evaluation sets, e.g. "heldout" (names: letters, digits, '.', '_', '-', '=').</param>
    /// <param name="options">Options (copied); default <see cref="ExperimentOptions"/>.</param>
    public LoopRptExperiment(IReadOnlyList<string> baseModelDirectories, Func<long, ITokenBatchSource> batchSource,
                             IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> evaluationSets, ExperimentOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(baseModelDirectories);
        ArgumentNullException.ThrowIfNull(batchSource);
        ArgumentNullException.ThrowIfNull(evaluationSets);
        _options = Copy(options ?? new ExperimentOptions());
        _options.Validate();

        if (baseModelDirectories.Count == 0) throw new ArgumentException("At least one base model directory is needed.", nameof(baseModelDirectories));
        var bases = new List<string>();
        foreach (var dir in baseModelDirectories)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(dir, nameof(baseModelDirectories));
            if (!Directory.Exists(dir))
                throw new ArgumentException($"The base model directory '{dir}' does not exist.", nameof(baseModelDirectories));
            if (!ModelDirectory.IsModelDirectory(dir))
                throw new ArgumentException($"'{dir}' is not a LoopRpt model directory (config.json and meta.json); save the base model with ModelDirectory.Save.", nameof(baseModelDirectories));
            var full = Path.GetFullPath(dir);
            if (bases.Contains(full)) throw new ArgumentException($"The base model directory '{dir}' is given twice.", nameof(baseModelDirectories));
            bases.Add(full);
        }
        _config = ModelDirectory.ReadConfig(bases[0]);
        if (_config.TotalUtSteps < 2)
            throw new ArgumentException($"The base model has total_ut_steps = {_config.TotalUtSteps}; LoopRPT rewards loop steps against each other and needs at least 2.", nameof(baseModelDirectories));
        foreach (var dir in bases.Skip(1))
            if (ModelDirectory.ReadConfig(dir).ToJson() != _config.ToJson())
                throw new ArgumentException($"The base model '{dir}' has another config than '{bases[0]}'; every base model must have the same shape.", nameof(baseModelDirectories));
        _bases = bases;

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

    /// <summary>The base model directories (full paths).</summary>
    public IReadOnlyList<string> BaseModels => _bases;

    /// <summary>
    /// Every arm's analytic FLOPs per optimizer step (<see cref="StepFlops"/>) from the model, the options and seed 1's first
    /// batch (its rows, sequence length and real targets per row), and the equal-compute controls' steps sized by them.
    /// </summary>
    public CostMeasurement Compute() => Compute(FirstBatch());

    /// <summary>The runs in training order and which of them <paramref name="outputDirectory"/> already holds (nothing is written).</summary>
    public IReadOnlyList<ExperimentRun> Plan(string outputDirectory)
    {
        var root = CheckOutputDirectory(outputDirectory);
        var cost = Compute();
        return Enumerable.Range(0, _bases.Count).SelectMany(b => PlanOf(Store(root, b), b, cost)).Select((r, i) => r with { Index = i }).ToArray();
    }

    /// <summary>
    /// Runs (or resumes) the experiment into <paramref name="outputDirectory"/>: evaluates the base model(s) and checks the
    /// premise, trains and evaluates every missing arm/seed, then writes report.md, results.csv and one Pareto band plot per
    /// evaluation set.
    /// </summary>
    /// <param name="outputDirectory">Created if missing; an existing experiment there is resumed.</param>
    /// <param name="progress">Training progress; <see cref="TrainingProgress.Stage"/> is the run's <see cref="ExperimentRun.Label"/> and <see cref="TrainingProgress.StageIndex"/> its <see cref="ExperimentRun.Index"/>.</param>
    /// <param name="cancellationToken">Cancels between and inside runs (an interrupted run checkpoints and resumes next time).</param>
    /// <exception cref="ArgumentException">The output path is a file, or it holds an experiment with other settings (checked before any training).</exception>
    public ExperimentResults Run(string outputDirectory, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var root = CheckOutputDirectory(outputDirectory);
        TorchNative.EnsureLoaded();
        var firstBatch = FirstBatch();
        CheckVocabulary([firstBatch], "The training batches", "batchSource");
        var cost = Compute(firstBatch);
        var stores = Enumerable.Range(0, _bases.Count).Select(b => Store(root, b)).ToArray();
        CheckLayout(root);
        for (int b = 0; b < stores.Length; b++)
        {
            Directory.CreateDirectory(stores[b].Root);
            stores[b].CheckOrWriteSettings(Settings(firstBatch, b));
        }
        ExperimentStore.Write(Path.Combine(root, "cost.json"), ExperimentStore.CostRecord.From(cost));
        Log(string.Create(C, $"compute: {string.Join(", ", cost.Arms.Select(a => $"{a.Arm} {a.Flops.Total:G3} FLOPs/step × {a.Steps}"))} (ratio {cost.Ratio:F2}, {cost.Source})"));

        var clock = Stopwatch.StartNew();
        var evaluator = new LoopEvaluator(new LoopEvaluationOptions { QValues = _options.QValues, Buckets = _options.Buckets, Pass = _options.Pass });

        // 1. The premise, from every base model, before any arm trains.
        var baseRuns = new List<ArmRun>();
        for (int b = 0; b < _bases.Count; b++)
        {
            using var baseModel = ModelDirectory.Load(_bases[b], _options.Device).Model;
            baseRuns.Add(BaseEvaluation(stores[b], evaluator, baseModel, b));
        }
        var premise = _sets.Keys.Select(set => PremiseCheck.Assess(set, baseRuns.Select(r => r.Evaluations[set]["All"]).ToArray())).ToArray();
        foreach (var p in premise)
            Log(string.Create(C, $"premise {p.EvaluationSet}: accuracy per loop {string.Join(" / ", p.Accuracy.Select(m => ExperimentSummary.Points(m)))} % → {(p.Holds ? "later loops beat loop 1" : "no later loop beats loop 1")}"));
        if (!premise.Any(p => p.Holds)) Log("WARNING " + PremiseCheck.Warning);
        var budgets = _bases.Select(BaseBudget.Of).ToArray();
        foreach (var budget in budgets) Log(budget.Text);

        // 2. The arms, base by base.
        var runs = new List<ArmRun>(_bases.Count == 1 ? [baseRuns[0] with { Seed = 0 }] : baseRuns.Select((r, b) => r with { Seed = b + 1 }));
        int trained = 0, index = 0;
        for (int b = 0; b < _bases.Count; b++)
        {
            using var baseModel = ModelDirectory.Load(_bases[b], _options.Device).Model;
            foreach (var planned in PlanOf(stores[b], b, cost).Select(r => r with { Index = index++ }))
            {
                cancellationToken.ThrowIfCancellationRequested();
                ArmRun run;
                if (planned.Done)
                {
                    run = LoadRun(stores[b], planned);
                    Log($"{planned.Label}: done earlier, evaluation loaded");
                }
                else
                {
                    run = TrainAndEvaluate(stores[b], b, planned, Arms.Single(a => a.Name == planned.Arm), evaluator, baseModel, progress, cancellationToken);
                    trained++;
                }
                runs.Add(run with { Seed = Replicate(b, planned.Seed) });
            }
        }

        // Report order (base, then the arms as listed, replicates ascending): the summary compares each arm with the controls before it.
        var armOrder = Arms.Select(a => a.Name).ToList();
        runs = [.. runs.OrderBy(r => r.Arm == ExperimentArm.BaseName ? -1 : armOrder.IndexOf(r.Arm)).ThenBy(r => r.Seed)];
        var controls = Arms.Where(a => a.IsControl).Select(a => a.Name).ToArray();
        var summary = ExperimentSummary.Create(runs, controls, _options.ParetoGridStep, _options.ParetoIncludesFixedSteps);
        var timings = Timings(stores);
        var report = new ExperimentReport(_options, Arms, _config, _bases, summary, runs, cost, _sets, premise, timings, budgets);
        var verdicts = report.Verdicts();
        var reportPath = Path.Combine(root, "report.md");
        var csvPath = Path.Combine(root, "results.csv");
        var plots = report.WritePlots(root);
        AtomicDirectory.WriteAllText(csvPath, ExperimentReport.Csv(runs, Arms));
        AtomicDirectory.WriteAllText(reportPath, report.Markdown(verdicts, plots.Select(Path.GetFileName).ToArray()!, trained, clock.Elapsed));
        Log(string.Create(C, $"wrote {reportPath}, {csvPath} and {plots.Count} plot(s); {trained} run(s) trained in {clock.Elapsed.TotalSeconds:F0} s"));
        return new ExperimentResults(root, Arms, _options.Seeds, runs, summary, cost, verdicts, trained, reportPath, csvPath, plots, premise, timings, _bases.Count)
        {
            BaseBudgets = budgets,
        };
    }

    // ---- runs --------------------------------------------------------------------------------------------------------

    /// <summary>The store of base <paramref name="b"/> (0-based): the output folder itself with one base, <c>by-base/bB</c> with several.</summary>
    private ExperimentStore Store(string root, int b) => new(_bases.Count == 1 ? root : Path.Combine(root, "by-base", $"b{b + 1}"));

    /// <summary>The replicate of (base b, seed): the seed with one base; (b − 1) × Seeds + seed with several.</summary>
    private int Replicate(int b, int seed) => _bases.Count == 1 ? seed : b * _options.Seeds + seed;

    /// <summary>Refuses a folder laid out for another number of base models (its runs would be retrained or ignored).</summary>
    private void CheckLayout(string root)
    {
        bool single = File.Exists(Path.Combine(root, "experiment.json")), several = Directory.Exists(Path.Combine(root, "by-base"));
        if (_bases.Count > 1 && single)
            throw new ArgumentException($"The output directory '{root}' holds a single-base experiment; use another folder for {_bases.Count} base models.", "outputDirectory");
        if (_bases.Count == 1 && several)
            throw new ArgumentException($"The output directory '{root}' holds an experiment with several base models (by-base/); use another folder for one base model.", "outputDirectory");
    }

    private List<ExperimentRun> PlanOf(ExperimentStore store, int b, CostMeasurement cost)
    {
        var plan = new List<ExperimentRun>();
        var order = Arms.Where(a => a.Kind != ArmKind.Stage1EqualCompute).Concat(Arms.Where(a => a.Kind == ArmKind.Stage1EqualCompute)).ToArray();
        for (int seed = 1; seed <= _options.Seeds; seed++)
            foreach (var arm in order)
                plan.Add(new ExperimentRun(plan.Count, arm.Name, seed, cost.Of(arm.Name).Steps, File.Exists(store.EvaluationFile(arm.Name, seed)), _bases.Count == 1 ? 0 : b + 1));
        return plan;
    }

    private ArmRun TrainAndEvaluate(ExperimentStore store, int b, ExperimentRun planned, ExperimentArm arm, LoopEvaluator evaluator, OuroForCausalLM baseModel,
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

        var loaded = ModelDirectory.Load(_bases[b], _options.Device);
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

    private ArmRun BaseEvaluation(ExperimentStore store, LoopEvaluator evaluator, OuroForCausalLM baseModel, int b)
    {
        var path = store.BaseEvaluationFile;
        var label = _bases.Count == 1 ? ExperimentArm.BaseName : $"{ExperimentArm.BaseName} {b + 1}";
        if (ExperimentStore.Read<ExperimentStore.RunFile>(path) is { } cached)
        {
            Log($"{label}: evaluation loaded");
            return cached.ToRun(path);
        }
        var evaluations = _sets.ToDictionary(kv => kv.Key, kv => evaluator.Evaluate(baseModel, kv.Value, baseModel, ExperimentArm.BaseName));
        ExperimentStore.Write(path, ExperimentStore.RunFile.From(ExperimentArm.BaseName, 0, 0, evaluations));
        Log($"{label}: evaluated");
        return new ArmRun(ExperimentArm.BaseName, 0, evaluations);
    }

    /// <summary>Each arm's measured wall-clock and CPU time over every base and seed.</summary>
    private IReadOnlyList<ArmTiming> Timings(IReadOnlyList<ExperimentStore> stores)
    {
        var list = new List<ArmTiming>();
        foreach (var arm in Arms)
        {
            var records = stores.SelectMany(s => Enumerable.Range(1, _options.Seeds).Select(seed => ExperimentStore.Read<ExperimentStore.TimingRecord>(s.TimingFile(arm.Name, seed))))
                .OfType<ExperimentStore.TimingRecord>().Where(t => t.Steps > 0).ToArray();
            if (records.Length == 0) continue;
            var medians = records.Select(t => t.SecondsPerStep).Order().ToArray();
            int n = medians.Length;
            list.Add(new ArmTiming(arm.Name, n, records.Sum(t => t.Steps), records.Sum(t => t.Seconds), records.Sum(t => t.CpuSeconds),
                n % 2 == 1 ? medians[n / 2] : (medians[n / 2 - 1] + medians[n / 2]) / 2));
        }
        return list;
    }

    // ---- compute -----------------------------------------------------------------------------------------------------

    private TokenBatch FirstBatch()
        => _batches(1)?.GetBatch(ModelDirectory.ReadMeta(_bases[0]).Step, 0)
           ?? throw new ArgumentException("The batch source factory returned null for seed 1.", "batchSource");

    /// <summary>Every arm's FLOPs per step from <paramref name="batch"/>'s shape and targets, and the controls' steps from them.</summary>
    private CostMeasurement Compute(TokenBatch batch)
    {
        int rows = batch.BatchSize, S = batch.SequenceLength, micro = _options.Optimizer.GradientAccumulation;
        var targets = Enumerable.Range(0, rows).Select(r => batch.Targets.Skip(r * S).Take(S).Count(t => t != TokenBatch.IgnoreIndex)).ToArray();
        var stage1 = StepFlops.Stage1(_config, rows, S, micro);
        var flops = Arms.ToDictionary(a => a.Name, a => a.LoopRptObjectiveOptions is { } o ? StepFlops.LoopRpt(_config, targets, S, o, micro) : stage1);
        long EqualSteps(double ratio) => Math.Max(1, (long)Math.Round(_options.Steps * ratio, MidpointRounding.AwayFromZero));
        double RatioOf(string arm) => _options.CostRatio ?? flops[arm].Total / stage1.Total;
        var arms = Arms.Select(a => new ArmCompute(a.Name, flops[a.Name], a.Kind == ArmKind.Stage1EqualCompute ? EqualSteps(RatioOf(a.ComputeOf!)) : _options.Steps)).ToArray();
        return new CostMeasurement(RatioOf(ExperimentArm.LoopRptName), EqualSteps(RatioOf(ExperimentArm.LoopRptName)), _options.CostRatio is null ? "FLOPs" : "given", arms);
    }

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
    private SortedDictionary<string, string> Settings(TokenBatch firstBatch, int b)
    {
        var o = _options;
        var settings = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["base_model"] = ExperimentStore.HashFile(Path.Combine(_bases[b], ModelWeights.FileName)),
            ["batches_seed1"] = ExperimentStore.HashBatches([firstBatch]),
            ["evaluation_sets"] = string.Join(",", _sets.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}:{ExperimentStore.HashBatches(kv.Value)}")),
            ["steps"] = o.Steps.ToString(C),
            ["learning_rate"] = o.Optimizer.LearningRate.ToString("R", C),
            ["weight_decay"] = o.Optimizer.WeightDecay.ToString("R", C),
            ["warmup_fraction"] = o.Optimizer.WarmupFraction.ToString("R", C),
            ["min_learning_rate_ratio"] = o.Optimizer.MinLearningRateRatio.ToString("R", C),
            ["gradient_clip"] = o.Optimizer.GradientClip.ToString("R", C),
            ["continuation_beta"] = o.ContinuationBeta.ToString("R", C),
            ["cost_ratio"] = o.CostRatio?.ToString("R", C) ?? "flops",        // "measured" (wall-clock) before issue 27: those folders are refused
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
