using System.Diagnostics;
using System.Globalization;
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
    public int TrainLines { get; init; } = 40_000;
    public int HeldOutLines { get; init; } = 400;
    public int VocabularySize { get; init; } = 320;
    public int Hidden { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Loops { get; init; } = 4;
    public int Batch { get; init; } = 16;
    public int SequenceLength { get; init; } = 64;
    public int PretrainSteps { get; init; } = 500;
    public int GateSteps { get; init; } = 50;
    public int LoopRptSteps { get; init; } = 24;
    public int Rollouts { get; init; } = 4;
    public double PretrainLearningRate { get; init; } = 3e-3;
    public double LoopRptLearningRate { get; init; } = 5e-4;
    public int LogEvery { get; init; } = 50;
    public long Seed { get; init; } = 1;

    /// <summary>The main job: a few minutes on 2 CPU cores.</summary>
    public static QuickStartSettings Default() => new();

    /// <summary>The reduced mode the test suite runs end to end (seconds).</summary>
    public static QuickStartSettings Quick() => new()
    {
        TrainLines = 2_000, HeldOutLines = 48, Hidden = 32, Batch = 8, SequenceLength = 48, PretrainSteps = 30, GateSteps = 6,
        LoopRptSteps = 3, Rollouts = 2, LogEvery = 10,
    };
}

/// <summary>What a QuickStart run produced.</summary>
public sealed record QuickStartResult(string OutputDirectory, IReadOnlyList<string> Files, LoopEvaluation Before, LoopEvaluation After, TimeSpan Elapsed);

/// <summary>
/// The main job on an embedded default, no download: a generated variable-binding corpus where the answer digit needs
/// several dependent steps (<see cref="BindingCorpus"/>) → byte-level BPE tokenizer → Ouro Stage I + gate training →
/// evaluation → LoopRPT → evaluation, writing per-step accuracy tables (markdown), answer accuracy by chain depth, a CSV
/// and Pareto plots (SVG) before and after LoopRPT into one folder, plus both models as LoopRpt model directories that the
/// <c>looprpt</c> tool can evaluate, score and sample.
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

        // 1. Corpus and tokenizer.
        var train = BindingCorpus.Lines(s.TrainLines, (int)s.Seed);
        var heldOut = BindingCorpus.Lines(s.HeldOutLines, (int)s.Seed + 1_000_003);
        var tokenizer = LoopRptTokenizer.Train(train.Select(l => l.Text), new ByteLevelBpeTrainerOptions { VocabularySize = s.VocabularySize }, cancellationToken);
        File.WriteAllText(Out("tokenizer.json"), tokenizer.Spec.ToJson());
        int eot = tokenizer.EosTokenId!.Value;
        int[] Stream(IEnumerable<BindingLine> lines) => lines.SelectMany(l => tokenizer.Encode(l.Text).Prepend(eot)).ToArray();
        var trainTokens = Stream(train);
        var heldOutTokens = Stream(heldOut);
        log.WriteLine($"corpus train_lines={train.Count} train_tokens={trainTokens.Length} heldout_tokens={heldOutTokens.Length} vocab={tokenizer.VocabularySize} example=\"{train[0].Text}\"");

        // 2. Ouro Stage I + gate (Stage II) from scratch.
        var config = new OuroConfig
        {
            VocabSize = tokenizer.VocabularySize, HiddenSize = s.Hidden, IntermediateSize = 3 * s.Hidden, NumHiddenLayers = s.Layers,
            NumAttentionHeads = 4, NumKeyValueHeads = 4, TotalUtSteps = s.Loops, RopeTheta = 10_000, MaxPositionEmbeddings = Math.Max(256, s.SequenceLength),
        }.Validate();
        var source = new PackedTokenSource(trainTokens, s.Batch, s.SequenceLength, s.Seed);
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
                new TrainingStage(new PretrainObjective(totalSteps: s.PretrainSteps), s.PretrainSteps) { LearningRate = s.PretrainLearningRate, WarmupFraction = 0.05 },
                new TrainingStage(new GateObjective(), s.GateSteps) { LearningRate = s.PretrainLearningRate, WarmupFraction = 0.05 },
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
            using var objective = new LoopRptObjective(new LoopRptOptions { Rollouts = s.Rollouts, Seed = s.Seed });
            var r = Trainer(s, student.Meta, log).Train(lm, source,
                [new TrainingStage(objective, s.LoopRptSteps) { LearningRate = s.LoopRptLearningRate, WeightDecay = 0.01 }], cancellationToken);
            looprptSeconds = (clock.Elapsed - t0).TotalSeconds;
            ModelDirectory.Save(afterDir, lm, With(student.Meta, r, ("looprpt", s.LoopRptSteps)));
        }
        using var afterModel = ModelDirectory.Load(afterDir).Model;

        // 4. Evaluate both on held-out text; buckets by the base model's entropy so both are measured on the same tokens.
        var t1 = clock.Elapsed;
        var evaluator = new LoopEvaluator();
        var windows = LoopEvaluator.Windows(heldOutTokens, s.Batch, s.SequenceLength).ToList();
        var before = evaluator.Evaluate(baseModel, windows, baseModel, "before LoopRPT");
        var after = evaluator.Evaluate(afterModel, windows, baseModel, "after LoopRPT");
        var answers = AnswerBatches(heldOut, tokenizer, s.Batch);
        var byDepth = answers.Select(a => (a.Depth, Before: evaluator.Evaluate(baseModel, a.Batches, baseModel, "before LoopRPT"),
                                                    After: evaluator.Evaluate(afterModel, a.Batches, baseModel, "after LoopRPT"))).ToList();
        double evalSeconds = (clock.Elapsed - t1).TotalSeconds;

        // 5. Tables and plots.
        File.WriteAllText(Out("accuracy-before.md"), before.ToMarkdown());
        File.WriteAllText(Out("accuracy-after.md"), after.ToMarkdown());
        File.WriteAllText(Out("results.csv"), LoopEvaluation.ToCsv([before, after]));
        ParetoPlot.WriteSvg(Out("pareto-before.svg"), [before], "Before LoopRPT: accuracy vs. mean exit step");
        ParetoPlot.WriteSvg(Out("pareto-after.svg"), [after], "After LoopRPT: accuracy vs. mean exit step");
        ParetoPlot.WriteSvg(Out("pareto.svg"), [before, after], "Before vs. after LoopRPT");
        var depthTable = DepthTable(byDepth, s.Loops);
        File.WriteAllText(Out("answers-by-depth.md"), depthTable);
        var summary = new StringBuilder()
            .Append("# QuickStart results\n\n")
            .Append(C, $"Corpus: {train.Count:N0} generated variable-binding lines ({trainTokens.Length:N0} tokens), e.g. `{train[0].Text}`; held-out {heldOut.Count} lines ({heldOutTokens.Length:N0} tokens). ")
            .Append(C, $"Tokenizer: byte-level BPE, {tokenizer.VocabularySize} tokens. Model: hidden {s.Hidden}, {s.Layers} layers × {s.Loops} loops. ")
            .Append(C, $"Training: {s.PretrainSteps} Stage I + {s.GateSteps} gate steps ({pretrainSeconds:F0} s), then {s.LoopRptSteps} LoopRPT steps with G = {s.Rollouts} ({looprptSeconds:F0} s); batch {s.Batch} × {s.SequenceLength}. Evaluation {evalSeconds:F0} s.\n\n")
            .Append("## Next-token accuracy (%) per loop step and under Q-exit, all held-out tokens\n\n")
            .Append(LoopEvaluation.CompareMarkdown([before, after], [0.5, 0.7, 1.0]))
            .Append("\n## Answer digits by chain depth (the tokens that need the computation)\n\n").Append(depthTable)
            .Append("\n## Pareto curves\n\n![before vs after](pareto.svg)\n\nSeparately: [before](pareto-before.svg), [after](pareto-after.svg); full tables: [before](accuracy-before.md), [after](accuracy-after.md); CSV: [results.csv](results.csv).\n")
            .Append("\nModels: `models/base` (Stage I + gate) and `models/looprpt`; try `looprpt evaluate --model models/looprpt --input heldout.txt`.\n");
        File.WriteAllText(Out("heldout.txt"), string.Join("\n", heldOut.Select(l => l.Text)) + "\n");
        File.WriteAllText(Out("README.md"), summary.ToString());
        files.Add(baseDir);
        files.Add(afterDir);
        return new QuickStartResult(outputDirectory, files, before, after, clock.Elapsed);
    }

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

    /// <summary>Batches that score only each line's answer digit (every other target is ignored), grouped by chain depth.</summary>
    internal static List<(int Depth, List<TokenBatch> Batches)> AnswerBatches(IReadOnlyList<BindingLine> lines, LoopRptTokenizer tokenizer, int batch)
    {
        int eot = tokenizer.EosTokenId!.Value;
        var rows = new List<(int Depth, int[] Ids, int Answer)>();
        foreach (var l in lines)
        {
            var ids = tokenizer.Encode(l.Text).Prepend(eot).ToArray();
            int answer = tokenizer.Encode(l.Text[..l.AnswerIndex]).Length + 1;     // index in ids of the answer token
            if (answer == ids.Length - 1 && tokenizer.Decode([ids[answer]]) == l.Text[l.AnswerIndex..]) rows.Add((l.Depth, ids, answer));
        }
        return rows.GroupBy(r => r.Depth).OrderBy(g => g.Key).Select(g => (g.Key, g.Chunk(batch).Select(chunk =>
        {
            int S = chunk.Max(r => r.Ids.Length - 1);
            var inputs = new long[chunk.Length * S];
            var targets = new long[inputs.Length];
            Array.Fill(inputs, eot);
            Array.Fill(targets, TokenBatch.IgnoreIndex);
            for (int b = 0; b < chunk.Length; b++)
            {
                for (int i = 0; i < chunk[b].Ids.Length - 1; i++) inputs[b * S + i] = chunk[b].Ids[i];
                targets[b * S + chunk[b].Answer - 1] = chunk[b].Ids[chunk[b].Answer];
            }
            return new TokenBatch(inputs, targets, chunk.Length, S);
        }).ToList())).ToList();
    }

    private static string DepthTable(IReadOnlyList<(int Depth, LoopEvaluation Before, LoopEvaluation After)> rows, int loops)
    {
        var sb = new StringBuilder("| depth | model | answers | ").Append(string.Join(" | ", Enumerable.Range(1, loops).Select(t => "s" + t)))
            .Append(" | q=0.5 acc @ exit |\n|---:|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", loops + 1))).Append('\n');
        foreach (var (depth, before, after) in rows)
            foreach (var e in new[] { before, after })
            {
                var all = e["All"];
                var q = all.AtQ(0.5);
                sb.Append(C, $"| {depth} | {e.Name} | {all.Tokens} | ").Append(string.Join(" | ", all.StepAccuracy.Select(a => (100 * a).ToString("F1", C))))
                  .Append(C, $" | {(q is null ? "–" : $"{100 * q.Accuracy:F1} @ {q.MeanExitStep:F2}")} |\n");
            }
        return sb.ToString();
    }

    private sealed class LineProgress(TextWriter log) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => log.WriteLine("progress " + value);
    }
}
