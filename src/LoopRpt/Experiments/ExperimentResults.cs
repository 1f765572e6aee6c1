namespace LoopRpt.Experiments;

/// <summary>One arm/seed of the plan, in training order.</summary>
/// <param name="Index">Position in the plan (also the <see cref="Training.TrainingProgress.StageIndex"/> of its progress reports).</param>
/// <param name="Arm">Arm name.</param>
/// <param name="Seed">Seed (1-based).</param>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="Done">True when its evaluation is stored (a run skips it).</param>
/// <param name="Base">The base model it starts from, 1-based, when the experiment has several; 0 when it has one.</param>
public sealed record ExperimentRun(int Index, string Arm, int Seed, long Steps, bool Done, int Base = 0)
{
    /// <summary>"ARM/seed-N" (one base) or "ARM/base-B/seed-N": the <see cref="Training.TrainingProgress.Stage"/> of its progress reports.</summary>
    public string Label => Base == 0 ? $"{Arm}/seed-{Seed}" : $"{Arm}/base-{Base}/seed-{Seed}";
}

/// <summary>One arm's analytic compute (<see cref="Training.StepFlops"/>) and its step count.</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Flops">Forward + backward FLOPs of one optimizer step, by part.</param>
/// <param name="Steps">Optimizer steps the arm trains.</param>
public sealed record ArmCompute(string Arm, Training.StepFlops Flops, long Steps)
{
    /// <summary>FLOPs of the whole run.</summary>
    public double TotalFlops => Flops.Total * Steps;
}

/// <summary>
/// How the equal-compute controls were sized. By default from analytic FLOPs: a control trains round(steps × FLOPs per step
/// of its LoopRPT arm / FLOPs per Stage I step) steps, at least 1 (<see cref="Training.StepFlops"/>); with
/// <see cref="ExperimentOptions.CostRatio"/> given, round(steps × that ratio) for the one control.
/// </summary>
/// <param name="Ratio">FLOPs per published LoopRPT step / FLOPs per Stage I step (or the given ratio).</param>
/// <param name="EqualComputeSteps">Steps of <see cref="ExperimentArm.EqualComputeName"/>.</param>
/// <param name="Source">"FLOPs" or "given".</param>
/// <param name="Arms">Every arm's FLOPs per step and steps, in report order.</param>
public sealed record CostMeasurement(double Ratio, long EqualComputeSteps, string Source, IReadOnlyList<ArmCompute> Arms)
{
    /// <summary>The compute of one arm.</summary>
    public ArmCompute Of(string arm) => Arms.FirstOrDefault(a => a.Arm == arm) ?? throw new ArgumentException($"No arm '{arm}'.", nameof(arm));
}

/// <summary>Measured time of an arm's runs, beside its FLOPs (shared machines make these noisy; the FLOPs size the controls).</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Runs">Runs with a timing.</param>
/// <param name="Steps">Optimizer steps timed, over all runs.</param>
/// <param name="Seconds">Wall-clock seconds of training, over all runs.</param>
/// <param name="CpuSeconds">Process CPU seconds of training (all threads), over all runs.</param>
/// <param name="MedianSecondsPerStep">Median over the runs of each run's median wall-clock seconds per step.</param>
public sealed record ArmTiming(string Arm, int Runs, long Steps, double Seconds, double CpuSeconds, double MedianSecondsPerStep)
{
    /// <summary>CPU seconds per optimizer step.</summary>
    public double CpuSecondsPerStep => Steps > 0 ? CpuSeconds / Steps : double.NaN;
}

/// <summary>One claim checked against the numbers, e.g. "looprpt − stage1-equal-steps at s1, Hard: +0.40 ± 0.30 points".</summary>
/// <param name="EvaluationSet">Evaluation set.</param>
/// <param name="Arm">The arm tested.</param>
/// <param name="Control">The control it is compared with.</param>
/// <param name="Where">What is compared: "s1, Hard", "matched exit steps, All", ...</param>
/// <param name="Difference">Arm − control in accuracy (fraction), mean ± std over seeds (paired).</param>
/// <param name="Outcome">"higher", "lower" (the 95 % interval of the mean excludes 0), "no clear difference", or "undetermined".</param>
/// <param name="Text">The sentence for the report.</param>
/// <remarks>
/// <see cref="Outcome"/> is decided by the Holm-adjusted p-value over every verdict of the report (the family), so a list
/// of twenty comparisons keeps a 5 % family-wise error rate; <see cref="PValue"/> is the unadjusted two-sided t-test.
/// </remarks>
public sealed record ExperimentVerdict(string EvaluationSet, string Arm, string Control, string Where, MeanStd Difference, string Outcome, string Text)
{
    /// <summary>Two-sided paired t-test p-value (NaN for fewer than two seeds).</summary>
    public double PValue { get; init; } = double.NaN;

    /// <summary>Holm-adjusted over the report's verdicts (NaN where <see cref="PValue"/> is).</summary>
    public double AdjustedPValue { get; init; } = double.NaN;
}

/// <summary>What <see cref="LoopRptExperiment.Run"/> produced.</summary>
public sealed class ExperimentResults
{
    internal ExperimentResults(string outputDirectory, IReadOnlyList<ExperimentArm> arms, int seeds, IReadOnlyList<ArmRun> runs, ExperimentSummary summary,
                               CostMeasurement? cost, IReadOnlyList<ExperimentVerdict> verdicts, int runsTrained, string reportPath, string resultsPath,
                               IReadOnlyList<string> plotPaths, IReadOnlyList<PremiseCheck> premise, IReadOnlyList<ArmTiming> timings, int bases)
    {
        Premise = premise;
        Timings = timings;
        Bases = bases;
        OutputDirectory = outputDirectory;
        Arms = arms;
        Seeds = seeds;
        Runs = runs;
        Summary = summary;
        Cost = cost;
        Verdicts = verdicts;
        RunsTrained = runsTrained;
        ReportPath = reportPath;
        ResultsPath = resultsPath;
        PlotPaths = plotPaths;
    }

    /// <summary>The output directory (full path).</summary>
    public string OutputDirectory { get; }

    /// <summary>The arms in report order.</summary>
    public IReadOnlyList<ExperimentArm> Arms { get; }

    /// <summary>Seeds 1..Seeds were run.</summary>
    public int Seeds { get; }

    /// <summary>Base models (each arm ran <see cref="Seeds"/> seeds from each).</summary>
    public int Bases { get; }

    /// <summary>The premise check per evaluation set, from the base models before any arm trained.</summary>
    public IReadOnlyList<PremiseCheck> Premise { get; }

    /// <summary>Each base model's training budget: its stages' steps and, for a plateau-stopped Stage I, why it stopped.</summary>
    public IReadOnlyList<BaseBudget> BaseBudgets { get; init; } = [];

    /// <summary>True when some later loop beats loop 1 beyond the noise on some evaluation set (else the report opens with <see cref="PremiseCheck.Warning"/>).</summary>
    public bool PremiseHolds => Premise.Any(p => p.Holds);

    /// <summary>Measured wall-clock and CPU time per arm.</summary>
    public IReadOnlyList<ArmTiming> Timings { get; }

    /// <summary>
    /// The base model(s) (arm "base": seed 0 with one base, seed b for base b with several) and every arm/seed with their
    /// evaluations. With several bases a run's <see cref="ArmRun.Seed"/> is its replicate (base − 1) × <see cref="Seeds"/> + seed,
    /// so that runs of the same base and seed pair up.
    /// </summary>
    public IReadOnlyList<ArmRun> Runs { get; }

    /// <summary>The aggregation over seeds.</summary>
    public ExperimentSummary Summary { get; }

    /// <summary>Every arm's FLOPs per step and how the equal-compute controls were sized.</summary>
    public CostMeasurement? Cost { get; }

    /// <summary>The claims checked, one line each in report.md.</summary>
    public IReadOnlyList<ExperimentVerdict> Verdicts { get; }

    /// <summary>Arm/seed runs trained by this call (0 when everything came from an earlier run).</summary>
    public int RunsTrained { get; }

    /// <summary>report.md.</summary>
    public string ReportPath { get; }

    /// <summary>results.csv.</summary>
    public string ResultsPath { get; }

    /// <summary>The Pareto band plots, one per evaluation set.</summary>
    public IReadOnlyList<string> PlotPaths { get; }
}
