using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Tokenization;
using LoopRpt.Training;
using static TorchSharp.torch;

namespace LoopRpt.QuickStart;

/// <summary>Sizes and budgets of a QuickStart run; <see cref="Default"/> takes a few minutes on 2 cores, <see cref="Quick"/> seconds.</summary>
public sealed record QuickStartSettings
{
    /// <summary>Largest hop count k (the difficulty knob); lines with k = 1..MaxHops are trained and evaluated.</summary>
    public int MaxHops { get; init; } = 3;
    /// <summary>Alphabet size (letters a, b, ...).</summary>
    public int Letters { get; init; } = 12;
    /// <summary>Chains per line, each of <see cref="MaxHops"/> + 1 letters.</summary>
    public int Chains { get; init; } = 3;
    /// <summary>One token per edge (letter-pair merges); false: one token per character.</summary>
    public bool PairTokens { get; init; } = true;
    /// <summary>Answers in upper case (false: in lower case, the same tokens as the letters; needs PairTokens = false).</summary>
    public bool UpperCaseAnswers { get; init; } = true;
    /// <summary>Tie the input embedding and the output head (Ouro's tie_word_embeddings).</summary>
    public bool TieEmbeddings { get; init; }
    /// <summary>List each chain from its end backwards (every edge after its target's edge), chains interleaved.</summary>
    public bool EndFirst { get; init; } = true;
    /// <summary>Also train every edge token to name its chain's end (a target that never appears as an input).</summary>
    public bool EdgeLabels { get; init; } = true;
    /// <summary>Stage I entropy weight β (Ouro: 0.1), and the late β from half the stage on (Ouro: 0.05).</summary>
    public double Beta { get; init; } = PretrainObjectiveOptions.Defaults.Beta;
    public double LateBeta { get; init; } = PretrainObjectiveOptions.Defaults.LateBeta;
    /// <summary>Queries per line (distinct start letters).</summary>
    public int Queries { get; init; } = PointerChaseCorpus.Queries;
    /// <summary>Held-out lines (each with <see cref="Queries"/> answers; hop counts uniform in 1..MaxHops).</summary>
    public int HeldOutLines { get; init; } = 512;
    public int Hidden { get; init; } = 64;
    public int Heads { get; init; } = 4;
    public int Layers { get; init; } = 1;
    public int Loops { get; init; } = 4;
    public int Batch { get; init; } = 32;
    public int PretrainSteps { get; init; } = 1500;
    /// <summary>Stage I steps over which kmax grows from 1 to <see cref="MaxHops"/> (0: all k from the start).</summary>
    public int CurriculumSteps { get; init; }
    /// <summary>Only the answer symbol carries a loss (see <see cref="ChaseBatchSource"/>).</summary>
    public bool AnswerOnly { get; init; } = true;
    public int GateSteps { get; init; } = 200;
    public int LoopRptSteps { get; init; } = 24;
    public int Rollouts { get; init; } = 4;
    public double PretrainLearningRate { get; init; } = 1e-2;
    public double GateLearningRate { get; init; } = 3e-3;
    public double LoopRptLearningRate { get; init; } = 1e-4;
    public int LogEvery { get; init; } = 100;
    public long Seed { get; init; } = 1;

    /// <summary>The main job: a few minutes on 2 CPU cores.</summary>
    public static QuickStartSettings Default() => new();

    /// <summary>The reduced mode the test suite runs end to end (seconds).</summary>
    public static QuickStartSettings Quick() => new()
    {
        MaxHops = 2, Letters = 8, Chains = 2, Queries = 2, HeldOutLines = 16, Hidden = 32, Batch = 8, PretrainSteps = 30, CurriculumSteps = 10, GateSteps = 6,
        LoopRptSteps = 3, Rollouts = 2, LogEvery = 10,
    };

    /// <summary>A copy with <c>Name=value</c> overrides (property names, case-insensitive), e.g. <c>Hidden=64</c>.</summary>
    public QuickStartSettings With(IEnumerable<string> assignments)
    {
        var copy = this with { };
        foreach (var a in assignments)
        {
            int eq = a.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"Expected Name=value, got '{a}'.", nameof(assignments));
            var p = typeof(QuickStartSettings).GetProperty(a[..eq].Trim(), BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase)
                ?? throw new ArgumentException($"Unknown setting '{a[..eq]}'; known: {string.Join(", ", typeof(QuickStartSettings).GetProperties().Select(x => x.Name))}.", nameof(assignments));
            p.SetValue(copy, Convert.ChangeType(a[(eq + 1)..].Trim(), p.PropertyType, CultureInfo.InvariantCulture));
        }
        return copy;
    }
}

/// <summary>One hop count's answer accuracy per loop and under Q-exit, before and after LoopRPT.</summary>
public sealed record HopResult(int Hops, LoopEvaluation Before, LoopEvaluation After);

/// <summary>A bar of the QuickStart and whether the run met it.</summary>
public sealed record Bar(string Name, string Measured, bool Met);

/// <summary>What a QuickStart run produced.</summary>
public sealed record QuickStartResult(string OutputDirectory, IReadOnlyList<string> Files, IReadOnlyList<HopResult> ByHops, IReadOnlyList<Bar> Bars, TimeSpan Elapsed);

/// <summary>
/// The main job on an embedded default, no download: generated pointer-chasing lines whose answer needs k dependent
/// lookups (<see cref="PointerChaseCorpus"/>) → a tokenizer with one token per edge → Ouro Stage I (optionally with a curriculum over k) and
/// Stage II (gate) from scratch → LoopRPT → answer accuracy per loop step and mean exit step, by k, before and after
/// LoopRPT, checked against the QuickStart's bars, with Pareto plots; both models saved as LoopRpt model directories.
/// </summary>
public static class QuickStartPipeline
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static QuickStartResult Run(QuickStartSettings s, string outputDirectory, TextWriter log, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(s);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        Native.TorchNative.EnsureLoaded();
        var clock = Stopwatch.StartNew();
        var files = new List<string>();
        Directory.CreateDirectory(outputDirectory);
        string Out(string name) { var p = Path.Combine(outputDirectory, name); files.Add(p); return p; }

        // 1. Tokenizer (one token per character: a byte-level vocabulary without merges) and held-out lines.
        var tokenizer = PointerChaseCorpus.Tokenizer(s.Letters, s.PairTokens);
        File.WriteAllText(Out("tokenizer.json"), tokenizer.Spec.ToJson());
        var source = new ChaseBatchSource(tokenizer, s.Batch, s.MaxHops, s.CurriculumSteps, s.AnswerOnly, s.Seed, s.Letters, s.Chains, s.Queries, s.PairTokens, s.UpperCaseAnswers, s.EndFirst, s.EdgeLabels);
        var heldOut = PointerChaseCorpus.Lines(s.HeldOutLines, s.MaxHops, (int)s.Seed + 1_000_003, s.Letters, s.Chains, s.Queries, s.UpperCaseAnswers, s.EndFirst);
        log.WriteLine($"task pointer-chasing k=1..{s.MaxHops} letters={s.Letters} chains={s.Chains} queries={s.Queries} example=\"{heldOut[0].Text}\" seq_len={source.SequenceLength}");

        // 2. Ouro Stage I + gate (Stage II) from scratch.
        var config = new OuroConfig
        {
            VocabSize = tokenizer.VocabularySize, HiddenSize = s.Hidden, IntermediateSize = 4 * s.Hidden, NumHiddenLayers = s.Layers,
            NumAttentionHeads = s.Heads, NumKeyValueHeads = s.Heads, TotalUtSteps = s.Loops, RopeTheta = 10_000, TieWordEmbeddings = s.TieEmbeddings, MaxPositionEmbeddings = Math.Max(64, source.SequenceLength),
        }.Validate();
        var meta = new ModelMeta { Tokenizer = tokenizer.Spec.ToJsonObject() };
        var baseDir = Path.Combine(outputDirectory, "models", "base");
        var afterDir = Path.Combine(outputDirectory, "models", "looprpt");
        double pretrainSeconds, looprptSeconds;
        using (var gen = new Generator((ulong)s.Seed))
        using (var lm = new OuroForCausalLM(config, generator: gen))
        {
            var t0 = clock.Elapsed;
            var r = Trainer(s, meta, log).Train(lm, source,
            [
                new TrainingStage(new PretrainObjective(new PretrainObjectiveOptions { Beta = s.Beta, LateBeta = s.LateBeta }), s.PretrainSteps) { LearningRate = s.PretrainLearningRate, WarmupFraction = 0.05 },
                new TrainingStage(new GateObjective(), s.GateSteps) { LearningRate = s.GateLearningRate, WarmupFraction = 0.05 },
            ], cancellationToken);
            pretrainSeconds = (clock.Elapsed - t0).TotalSeconds;
            ModelDirectory.Save(baseDir, lm, With(meta, r, ("pretrain", s.PretrainSteps), ("gate", s.GateSteps)));
        }

        // 3. LoopRPT continues from the saved base model (docs/looprpt.md).
        using var baseModel = ModelDirectory.Load(baseDir).Model;
        var student = ModelDirectory.Load(baseDir);
        using (var lm = student.Model)
        {
            var t0 = clock.Elapsed;
            if (s.LoopRptSteps > 0)
            {
                using var objective = new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = s.Rollouts, Seed = s.Seed });
                var r = Trainer(s, student.Meta, log).Train(lm, source,
                    [new TrainingStage(objective, s.LoopRptSteps) { LearningRate = s.LoopRptLearningRate, WeightDecay = 0.01, MinLearningRateRatio = 0 }], cancellationToken);
                ModelDirectory.Save(afterDir, lm, With(student.Meta, r, ("looprpt", s.LoopRptSteps)));
            }
            else ModelDirectory.Save(afterDir, lm, student.Meta);
            looprptSeconds = (clock.Elapsed - t0).TotalSeconds;
        }
        using var afterModel = ModelDirectory.Load(afterDir).Model;

        // 4. Answer accuracy per loop step and under Q-exit, by hop count.
        var t1 = clock.Elapsed;
        var evaluator = new LoopEvaluator();
        var byHops = new List<HopResult>();
        for (int k = 1; k <= s.MaxHops; k++)
        {
            int hops = k;
            var batches = heldOut.Chunk(s.Batch).Select(c => ChaseBatchSource.Batch(tokenizer, c, source.SequenceLength, q => q.Hops == hops)).ToList();
            byHops.Add(new HopResult(k, evaluator.Evaluate(baseModel, batches, baseModel, $"before LoopRPT, k={k}"),
                                        evaluator.Evaluate(afterModel, batches, baseModel, $"after LoopRPT, k={k}")));
        }
        double evalSeconds = (clock.Elapsed - t1).TotalSeconds;
        var bars = Bars(byHops.Select(h => (h.Hops, h.Before)).ToArray());

        // 5. Tables and plots.
        var hopTable = HopTable(byHops, s.Loops);
        File.WriteAllText(Out("answers-by-hops.md"), hopTable);
        File.WriteAllText(Out("results.csv"), LoopEvaluation.ToCsv(byHops.SelectMany(h => new[] { h.Before, h.After })));
        ParetoPlot.WriteSvg(Out("pareto.svg"), [Pooled(byHops, h => h.Before, "before LoopRPT"), Pooled(byHops, h => h.After, "after LoopRPT")],
            "Answer accuracy vs. mean exit step, all k");
        ParetoPlot.WriteSvg(Out("pareto-by-hops.svg"), byHops.Select(h => h.Before).ToArray(), "Before LoopRPT, by hop count k");
        File.WriteAllText(Out("heldout.txt"), string.Join("\n", heldOut.Select(l => l.Text)) + "\n");
        var summary = new StringBuilder()
            .Append("# QuickStart results\n\n")
            .Append(C, $"Task: pointer chasing, k = 1..{s.MaxHops} hops to the end of one of {s.Chains} chains of {s.MaxHops + 1} letters, {s.Queries} queries per line, e.g. `{heldOut[0].Text}`")
            .Append(s.EndFirst ? " (each chain listed from its end backwards, chains interleaved)" : "")
            .Append(s.EdgeLabels ? "; in training every edge token is also labelled with its chain's end" : "").Append("; ")
            .Append(C, $"{s.HeldOutLines} held-out lines. Model: hidden {s.Hidden}, {s.Layers} layers × {s.Loops} loops, {(s.PairTokens ? "one token per edge" : "one token per character")}. ")
            .Append(C, $"Training: {s.PretrainSteps} Stage I steps{(s.CurriculumSteps > 0 ? $" (curriculum over k for {s.CurriculumSteps})" : "")} at lr {s.PretrainLearningRate} + {s.GateSteps} gate steps, batch {s.Batch} lines ({pretrainSeconds:F0} s); ")
            .Append(C, $"then {s.LoopRptSteps} LoopRPT steps with G = {s.Rollouts} ({looprptSeconds:F0} s). Evaluation {evalSeconds:F0} s.\n\n")
            .Append("## Bars\n\n").Append(BarTable(bars))
            .Append("\n## Answer accuracy (%) per loop step and mean exit step, by hop count k\n\n").Append(hopTable)
            .Append("\n## Pareto curves\n\n![before vs after](pareto.svg) ![by k](pareto-by-hops.svg)\n\nCSV: [results.csv](results.csv).\n")
            .Append("\nModels: `models/base` (Stage I + gate) and `models/looprpt`.\n");
        File.WriteAllText(Out("README.md"), summary.ToString());
        files.Add(baseDir);
        files.Add(afterDir);
        return new QuickStartResult(outputDirectory, files, byHops, bars, clock.Elapsed);
    }

    /// <summary>
    /// The multi-seed LoopRPT protocol (<see cref="Experiments.LoopRptExperiment"/>) on this task, from the base model a
    /// QuickStart run saved in <paramref name="quickStartDirectory"/>: equal-steps and equal-compute Stage I controls,
    /// LoopRPT with the published defaults and the all-tokens variant, each for <paramref name="seeds"/> seeds (batch order
    /// and rollout noise), evaluated on the held-out answers of every k and of all k together.
    /// </summary>
    public static Experiments.ExperimentResults RunExperiment(QuickStartSettings s, string quickStartDirectory, string outputDirectory, int seeds, long steps, double learningRate,
                                                             TextWriter log, CancellationToken cancellationToken = default, EntropyBuckets? buckets = null)
        => RunExperiment(s, [quickStartDirectory], outputDirectory, seeds, steps, learningRate, log, cancellationToken, buckets);

    /// <summary>
    /// The protocol from the base models of several QuickStart runs (e.g. of different seeds: <see cref="BaseSeedDirectory"/>),
    /// so that ± includes the base models' variance; the held-out lines and the batches are those of <paramref name="s"/>.
    /// </summary>
    public static Experiments.ExperimentResults RunExperiment(QuickStartSettings s, IReadOnlyList<string> quickStartDirectories, string outputDirectory, int seeds, long steps,
                                                             double learningRate, TextWriter log, CancellationToken cancellationToken = default, EntropyBuckets? buckets = null)
    {
        var baseDirs = quickStartDirectories.Select(d => Path.Combine(d, "models", "base")).ToArray();
        var tokenizer = PointerChaseCorpus.Tokenizer(s.Letters, s.PairTokens);
        var heldOut = PointerChaseCorpus.Lines(s.HeldOutLines, s.MaxHops, (int)s.Seed + 1_000_003, s.Letters, s.Chains, s.Queries, s.UpperCaseAnswers, s.EndFirst);
        int seqLen = PointerChaseCorpus.InputTokens(s.Chains, s.MaxHops, s.Queries, s.PairTokens);
        var sets = new Dictionary<string, IReadOnlyList<TokenBatch>>
        {
            ["all"] = heldOut.Chunk(s.Batch).Select(c => ChaseBatchSource.Batch(tokenizer, c, seqLen, _ => true)).ToList(),
        };
        for (int k = 1; k <= s.MaxHops; k++)
        {
            int hops = k;
            sets[$"k={k}"] = heldOut.Chunk(s.Batch).Select(c => ChaseBatchSource.Batch(tokenizer, c, seqLen, q => q.Hops == hops)).ToList();
        }
        var experiment = new Experiments.LoopRptExperiment(baseDirs,
            seed => new ChaseBatchSource(tokenizer, s.Batch, s.MaxHops, curriculumSteps: 0, s.AnswerOnly, seed, s.Letters, s.Chains, s.Queries, s.PairTokens, s.UpperCaseAnswers, s.EndFirst, s.EdgeLabels),
            sets, new Experiments.ExperimentOptions { Seeds = seeds, Steps = steps, LearningRate = learningRate, Log = log.WriteLine, Buckets = buckets ?? EntropyBuckets.Published });
        return experiment.Run(outputDirectory, new LineProgress(log), cancellationToken);
    }

    /// <summary>Where the QuickStart run of base seed <paramref name="b"/> (1-based) lives: <paramref name="outputDirectory"/> itself for 1, "DIR-base-B" after.</summary>
    public static string BaseSeedDirectory(string outputDirectory, int b) => b == 1 ? outputDirectory : $"{outputDirectory.TrimEnd('/', '\\')}-base-{b}";

    /// <summary>
    /// The QuickStart's bars on the base model (after Stage II): last-loop answer accuracy ≥ 90 % at k = 1 and ≥ 75 % at the
    /// largest k; at the largest k, loop-1 accuracy at least 30 points below the last loop's; the mean Q-exit step at
    /// q = 0.5 never falls from one k to the next and rises by at least half a loop from k = 1 to the largest k.
    /// </summary>
    public static IReadOnlyList<Bar> Bars(IReadOnlyList<(int Hops, LoopEvaluation Evaluation)> byHops)
    {
        var first = byHops[0].Evaluation["All"];
        var last = byHops[^1].Evaluation["All"];
        int K = byHops[^1].Hops;
        var exits = byHops.Select(h => h.Evaluation["All"].AtQ(0.5)?.MeanExitStep ?? double.NaN).ToArray();
        bool rises = exits.Zip(exits.Skip(1)).All(p => p.Second >= p.First) && exits[^1] - exits[0] >= 0.5;
        return
        [
            new Bar("last-loop answer accuracy ≥ 90 % at k = 1", P(first.LastStepAccuracy), first.LastStepAccuracy >= 0.90),
            new Bar($"last-loop answer accuracy ≥ 75 % at k = {K}", P(last.LastStepAccuracy), last.LastStepAccuracy >= 0.75),
            new Bar($"loop-1 accuracy ≥ 30 points below the last loop's at k = {K}", $"{P(last.StepAccuracy[0])} vs {P(last.LastStepAccuracy)}",
                last.LastStepAccuracy - last.StepAccuracy[0] >= 0.30),
            new Bar("mean Q-exit step at q = 0.5 rises with k (never falls, +0.5 from first to last k)", string.Join(" → ", exits.Select(e => e.ToString("F2", C))), rises),
        ];
    }

    private static string P(double v) => (100 * v).ToString("F1", C) + " %";

    private static string BarTable(IReadOnlyList<Bar> bars)
    {
        var sb = new StringBuilder("| bar | measured | met |\n|---|---|---|\n");
        foreach (var b in bars) sb.Append(C, $"| {b.Name} | {b.Measured} | {(b.Met ? "met" : "**not met**")} |\n");
        return sb.ToString();
    }

    /// <summary>A pooled view of all k (each k weighted by its answer count) as one evaluation, for the Pareto plot.</summary>
    private static LoopEvaluation Pooled(IReadOnlyList<HopResult> rows, Func<HopResult, LoopEvaluation> pick, string name)
        => LoopEvaluation.Pool(rows.Select(pick).ToArray(), name);

    private static LoopedLmTrainer Trainer(QuickStartSettings s, ModelMeta meta, TextWriter log) => new(new TrainerOptions
    {
        LogEvery = s.LogEvery, Seed = s.Seed, BaseMeta = meta, Progress = new LineProgress(log),
    });

    private static ModelMeta With(ModelMeta meta, TrainingResult r, params (string Name, long Steps)[] stages)
    {
        var m = meta.Clone();
        m.Step = r.GlobalStep;
        m.TokensSeen = r.TokensSeen;
        m.Stages.AddRange(stages.Select(x => new StageRecord(x.Name, x.Steps)));
        if (r.LastProgress is { } p) m.Metrics = p.Metrics.ToDictionary(kv => kv.Key, kv => kv.Value);
        return m;
    }

    private static string HopTable(IReadOnlyList<HopResult> rows, int loops)
    {
        var sb = new StringBuilder("| k | model | answers | ").Append(string.Join(" | ", Enumerable.Range(1, loops).Select(t => "s" + t)))
            .Append(" | q=0.5 acc @ mean exit |\n|---:|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", loops + 1))).Append('\n');
        foreach (var row in rows)
            foreach (var e in new[] { row.Before, row.After })
            {
                var all = e["All"];
                var q = all.AtQ(0.5);
                sb.Append(C, $"| {row.Hops} | {e.Name[..e.Name.IndexOf(',')]} | {all.Tokens} | ").Append(string.Join(" | ", all.StepAccuracy.Select(a => (100 * a).ToString("F1", C))))
                  .Append(C, $" | {(q is null ? "–" : $"{100 * q.Accuracy:F1} @ {q.MeanExitStep:F2}")} |\n");
            }
        return sb.ToString();
    }

    private sealed class LineProgress(TextWriter log) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => log.WriteLine("progress " + value);
    }
}
