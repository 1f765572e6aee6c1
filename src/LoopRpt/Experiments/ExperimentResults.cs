namespace LoopRpt.Experiments;

/// <summary>One arm/seed of the plan, in training order.</summary>
/// <param name="Index">Position in the plan (also the <see cref="Training.TrainingProgress.StageIndex"/> of its progress reports).</param>
/// <param name="Arm">Arm name.</param>
/// <param name="Seed">Seed (1-based).</param>
/// <param name="Steps">Optimizer steps; 0 for the equal-compute control while the cost ratio is not yet known.</param>
/// <param name="Done">True when its evaluation is stored (a run skips it).</param>
public sealed record ExperimentRun(int Index, string Arm, int Seed, long Steps, bool Done)
{
    /// <summary>"ARM/seed-N": the <see cref="Training.TrainingProgress.Stage"/> of its progress reports.</summary>
    public string Label => $"{Arm}/seed-{Seed}";
}

/// <summary>The cost of a LoopRPT step in Stage I steps, and where the number came from.</summary>
/// <param name="Ratio">Median seconds per LoopRPT step / median seconds per Stage I step.</param>
/// <param name="LoopRptSecondsPerStep">Measured seconds per step of the LoopRPT arm (seed 1); NaN when the ratio was given.</param>
/// <param name="Stage1SecondsPerStep">Measured seconds per step of the equal-steps control (seed 1); NaN when the ratio was given.</param>
/// <param name="EqualComputeSteps">Steps of the equal-compute control: round(steps × ratio), at least 1.</param>
/// <param name="Source">"measured (seed 1)" or "given".</param>
/// <param name="CpuRatio">
/// The same ratio from the process's CPU time over the two runs: less sensitive than the wall clock to other jobs on a
/// shared machine, reported beside it as a cross-check (NaN when not measured).
/// </param>
public sealed record CostMeasurement(double Ratio, double LoopRptSecondsPerStep, double Stage1SecondsPerStep, long EqualComputeSteps, string Source, double CpuRatio);

/// <summary>One claim checked against the numbers, e.g. "looprpt − stage1-equal-steps at s1, Hard: +0.40 ± 0.30 points".</summary>
/// <param name="EvaluationSet">Evaluation set.</param>
/// <param name="Arm">The arm tested.</param>
/// <param name="Control">The control it is compared with.</param>
/// <param name="Where">What is compared: "s1, Hard", "matched exit steps, All", ...</param>
/// <param name="Difference">Arm − control in accuracy (fraction), mean ± std over seeds (paired).</param>
/// <param name="Outcome">"higher", "lower" (the 95 % interval of the mean excludes 0), "no clear difference", or "undetermined".</param>
/// <param name="Text">The sentence for the report.</param>
public sealed record ExperimentVerdict(string EvaluationSet, string Arm, string Control, string Where, MeanStd Difference, string Outcome, string Text);

/// <summary>What <see cref="LoopRptExperiment.Run"/> produced.</summary>
public sealed class ExperimentResults
{
    internal ExperimentResults(string outputDirectory, IReadOnlyList<ExperimentArm> arms, int seeds, IReadOnlyList<ArmRun> runs, ExperimentSummary summary,
                               CostMeasurement? cost, IReadOnlyList<ExperimentVerdict> verdicts, int runsTrained, string reportPath, string resultsPath,
                               IReadOnlyList<string> plotPaths)
    {
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

    /// <summary>The base model (arm "base", seed 0) and every arm/seed with their evaluations.</summary>
    public IReadOnlyList<ArmRun> Runs { get; }

    /// <summary>The aggregation over seeds.</summary>
    public ExperimentSummary Summary { get; }

    /// <summary>The cost ratio, or null when neither given nor measurable (equal-compute control off and no seed-1 timing).</summary>
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
