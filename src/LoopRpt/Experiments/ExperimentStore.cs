using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;

namespace LoopRpt.Experiments;

/// <summary>
/// The experiment's folder and its files. Format version 1:
/// <list type="bullet">
/// <item><c>experiment.json</c> — format, format_version, and the settings every run depends on (base model hash, first
/// batch of seed 1, evaluation-set hashes, optimizer settings, q values); a rerun with other settings is refused.</item>
/// <item><c>cost.json</c> — every arm's analytic FLOPs per step and steps (<see cref="Training.StepFlops"/>), which size the equal-compute controls.</item>
/// <item><c>runs/base/evaluation.json</c> — the base model's evaluation on every set.</item>
/// <item><c>runs/ARM/seed-N/arm.json</c> — the arm's definition (kind, steps, learning rate, LoopRPT options).</item>
/// <item><c>runs/ARM/seed-N/timing.json</c> — optimizer steps trained and wall-clock seconds, summed over sessions.</item>
/// <item><c>runs/ARM/seed-N/checkpoints/</c> — trainer checkpoints while the run is unfinished (removed once evaluated).</item>
/// <item><c>runs/ARM/seed-N/model/</c> — the trained model directory (with <see cref="ExperimentOptions.KeepModels"/>).</item>
/// <item><c>runs/ARM/seed-N/evaluation.json</c> — the run's evaluations; its presence marks the run done.</item>
/// </list>
/// Every file is replaced atomically (temporary file + rename).
/// </summary>
internal sealed class ExperimentStore
{
    public const string FormatName = "looprpt-experiment";
    public const int FormatVersion = 1;

    public ExperimentStore(string root) => Root = Path.GetFullPath(root);

    public string Root { get; }
    public string ExperimentFile => Path.Combine(Root, "experiment.json");
    public string BaseEvaluationFile => Path.Combine(Root, "runs", ExperimentArm.BaseName, "evaluation.json");
    public string RunDirectory(string arm, int seed) => Path.Combine(Root, "runs", arm, $"seed-{seed}");
    public string EvaluationFile(string arm, int seed) => Path.Combine(RunDirectory(arm, seed), "evaluation.json");
    public string TimingFile(string arm, int seed) => Path.Combine(RunDirectory(arm, seed), "timing.json");
    public string DefinitionFile(string arm, int seed) => Path.Combine(RunDirectory(arm, seed), "arm.json");
    public string CheckpointDirectory(string arm, int seed) => Path.Combine(RunDirectory(arm, seed), "checkpoints");
    public string ModelDirectoryOf(string arm, int seed) => Path.Combine(RunDirectory(arm, seed), "model");

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static void Write<T>(string path, T value) => AtomicDirectory.WriteAllText(path, JsonSerializer.Serialize(value, Json));

    public static T? Read<T>(string path) where T : class
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid experiment file ({e.Message}); delete it to redo that step.", e);
        }
    }

    // ---- evaluations -------------------------------------------------------------------------------------------------

    /// <summary>One run's stored results.</summary>
    internal sealed class RunFile
    {
        [JsonPropertyName("format")] public string Format { get; set; } = FormatName;
        [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = ExperimentStore.FormatVersion;
        [JsonPropertyName("arm")] public string Arm { get; set; } = "";
        [JsonPropertyName("seed")] public int Seed { get; set; }
        [JsonPropertyName("steps")] public long Steps { get; set; }
        [JsonPropertyName("evaluations")] public Dictionary<string, EvaluationDto> Evaluations { get; set; } = [];

        public static RunFile From(string arm, int seed, long steps, IReadOnlyDictionary<string, LoopEvaluation> evaluations)
            => new() { Arm = arm, Seed = seed, Steps = steps, Evaluations = evaluations.ToDictionary(kv => kv.Key, kv => EvaluationDto.From(kv.Value)) };

        public ArmRun ToRun(string path)
        {
            if (Format != FormatName || FormatVersion is < 1 or > ExperimentStore.FormatVersion)
                throw new InvalidDataException($"'{path}' has format '{Format}' version {FormatVersion}; this LoopRpt reads '{FormatName}' versions 1 to {ExperimentStore.FormatVersion}.");
            return new ArmRun(Arm, Seed, Evaluations.ToDictionary(kv => kv.Key, kv => kv.Value.ToEvaluation()));
        }
    }

    internal sealed class EvaluationDto
    {
        [JsonPropertyName("name")] public string Name { get; set; } = "";
        [JsonPropertyName("steps")] public int Steps { get; set; }
        [JsonPropertyName("q_values")] public double[] QValues { get; set; } = [];
        [JsonPropertyName("buckets_from_base_model")] public bool BucketsFromBaseModel { get; set; }
        [JsonPropertyName("buckets")] public List<BucketDto> Buckets { get; set; } = [];
        [JsonPropertyName("pass")] public string? Pass { get; set; }

        public static EvaluationDto From(LoopEvaluation e) => new()
        {
            Name = e.Name, Steps = e.Steps, QValues = [.. e.QValues], BucketsFromBaseModel = e.BucketsFromBaseModel,
            Pass = e.Pass == EvaluationPass.Adaptive ? "adaptive" : null,
            Buckets = e.Buckets.Select(b => new BucketDto
            {
                Name = b.Name, MinEntropy = b.MinEntropy, TopFraction = b.TopFraction, Tokens = b.Tokens, StepAccuracy = [.. b.StepAccuracy],
                StepNll = b.StepNegativeLogLikelihood.Count > 0 ? [.. b.StepNegativeLogLikelihood] : null,
                QExit = b.QExit.Select(p => new QExitDto { Q = p.Q, Accuracy = p.Accuracy, MeanExitStep = p.MeanExitStep, Nll = Finite(p.NegativeLogLikelihood) }).ToList(),
            }).ToList(),
        };

        public LoopEvaluation ToEvaluation() => new(Name, Steps, QValues, BucketsFromBaseModel,
            Buckets.Select(b => new BucketEvaluation(b.Name, b.MinEntropy, b.Tokens, b.StepAccuracy,
                b.QExit.Select(p => new QExitPoint(p.Q, p.Accuracy, p.MeanExitStep) { NegativeLogLikelihood = p.Nll ?? double.NaN }).ToArray())
            {
                TopFraction = b.TopFraction, StepNegativeLogLikelihood = b.StepNll ?? [],
            }).ToArray()) { Pass = Pass == "adaptive" ? EvaluationPass.Adaptive : EvaluationPass.FullDepth };

        private static double? Finite(double v) => double.IsFinite(v) ? v : null;
    }

    internal sealed class BucketDto
    {
        [JsonPropertyName("name")] public string Name { get; set; } = "";
        [JsonPropertyName("min_entropy")] public double MinEntropy { get; set; }
        [JsonPropertyName("top_fraction")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? TopFraction { get; set; }
        [JsonPropertyName("tokens")] public long Tokens { get; set; }
        [JsonPropertyName("step_accuracy")] public double[] StepAccuracy { get; set; } = [];
        [JsonPropertyName("step_nll")] public double[]? StepNll { get; set; }
        [JsonPropertyName("q_exit")] public List<QExitDto> QExit { get; set; } = [];
    }

    internal sealed class QExitDto
    {
        [JsonPropertyName("q")] public double Q { get; set; }
        [JsonPropertyName("accuracy")] public double Accuracy { get; set; }
        [JsonPropertyName("mean_exit_step")] public double MeanExitStep { get; set; }
        [JsonPropertyName("nll")] public double? Nll { get; set; }
    }

    // ---- timing and cost ---------------------------------------------------------------------------------------------

    internal sealed class TimingRecord
    {
        [JsonPropertyName("steps")] public long Steps { get; set; }
        [JsonPropertyName("seconds")] public double Seconds { get; set; }
        /// <summary>CPU seconds of the whole process while training (all threads): a load-independent cross-check of the wall clock.</summary>
        [JsonPropertyName("cpu_seconds")] public double CpuSeconds { get; set; }
        /// <summary>Wall-clock seconds between consecutive batch requests, i.e. of single optimizer steps.</summary>
        [JsonPropertyName("step_seconds")] public List<double> StepSeconds { get; set; } = [];

        /// <summary>
        /// The median step time: robust to the steps that also wrote a checkpoint or a progress report and to the first,
        /// warming-up steps; the mean over the whole run when no single step was timed.
        /// </summary>
        [JsonIgnore]
        public double SecondsPerStep
        {
            get
            {
                if (StepSeconds.Count == 0) return Steps > 0 ? Seconds / Steps : double.NaN;
                var sorted = StepSeconds.Order().ToArray();
                int n = sorted.Length;
                return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
            }
        }
    }

    /// <summary>Adds a session's trained steps, seconds and step times to a run's timing.</summary>
    public void AddTiming(string arm, int seed, long steps, double seconds, double cpuSeconds, IReadOnlyList<double> stepSeconds)
    {
        if (steps <= 0) return;
        var path = TimingFile(arm, seed);
        var t = Read<TimingRecord>(path) ?? new TimingRecord();
        t.Steps += steps;
        t.Seconds += seconds;
        t.CpuSeconds += cpuSeconds;
        t.StepSeconds.AddRange(stepSeconds);
        Write(path, t);
    }

    /// <summary><c>cost.json</c>: every arm's FLOPs per step and steps, for the record (the sizing is recomputed on every run).</summary>
    internal sealed class CostRecord
    {
        [JsonPropertyName("ratio")] public double Ratio { get; set; }
        [JsonPropertyName("source")] public string Source { get; set; } = "";
        [JsonPropertyName("arms")] public List<ArmCostRecord> Arms { get; set; } = [];

        public static CostRecord From(CostMeasurement c) => new()
        {
            Ratio = c.Ratio, Source = c.Source,
            Arms = c.Arms.Select(a => new ArmCostRecord { Arm = a.Arm, Steps = a.Steps, ForwardFlops = a.Flops.Forward, BackwardFlops = a.Flops.Backward }).ToList(),
        };
    }

    internal sealed class ArmCostRecord
    {
        [JsonPropertyName("arm")] public string Arm { get; set; } = "";
        [JsonPropertyName("steps")] public long Steps { get; set; }
        [JsonPropertyName("forward_flops_per_step")] public double ForwardFlops { get; set; }
        [JsonPropertyName("backward_flops_per_step")] public double BackwardFlops { get; set; }
    }

    // ---- fingerprint -------------------------------------------------------------------------------------------------

    internal sealed class SettingsRecord
    {
        [JsonPropertyName("format")] public string Format { get; set; } = FormatName;
        [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = ExperimentStore.FormatVersion;
        [JsonPropertyName("settings")] public SortedDictionary<string, string> Settings { get; set; } = [];
    }

    /// <summary>
    /// Writes the settings on the first run; afterwards refuses a run whose settings differ (its cached runs would not be
    /// comparable). Seeds, the equal-compute switch and the variants may change: they only add or skip runs.
    /// </summary>
    public void CheckOrWriteSettings(SortedDictionary<string, string> settings)
    {
        var stored = Read<SettingsRecord>(ExperimentFile);
        if (stored is null)
        {
            Write(ExperimentFile, new SettingsRecord { Settings = settings });
            return;
        }
        if (stored.Format != FormatName || stored.FormatVersion is < 1 or > FormatVersion)
            throw new InvalidDataException($"'{ExperimentFile}' has format '{stored.Format}' version {stored.FormatVersion}; this LoopRpt reads '{FormatName}' versions 1 to {FormatVersion}.");
        var changed = settings.Keys.Union(stored.Settings.Keys)
            .Where(k => settings.GetValueOrDefault(k) != stored.Settings.GetValueOrDefault(k)).ToList();
        if (changed.Count > 0)
            throw new ArgumentException(
                $"The output directory '{Root}' holds an experiment with other settings ({string.Join("; ", changed.Select(k => $"{k}: was {stored.Settings.GetValueOrDefault(k) ?? "unset"}, now {settings.GetValueOrDefault(k) ?? "unset"}"))}). " +
                "Its runs would not be comparable: choose another output directory, or delete this one to start over.", "outputDirectory");
    }

    public static string HashFile(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream))[..16];
    }

    public static string HashBatches(IEnumerable<TokenBatch> batches)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var b in batches)
        {
            sha.AppendData(MemoryMarshal.AsBytes(b.Inputs.AsSpan()));
            sha.AppendData(MemoryMarshal.AsBytes(b.Targets.AsSpan()));
            sha.AppendData(BitConverter.GetBytes(b.SequenceLength));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
    }
}
