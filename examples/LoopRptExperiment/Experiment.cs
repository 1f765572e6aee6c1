using System.Diagnostics;
using System.Globalization;
using System.Text;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRptExperiment;

/// <summary>Sizes and budgets of one run.</summary>
internal sealed record Settings
{
    public int Hidden { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int Ffn { get; init; } = 192;
    public int Loops { get; init; } = 4;
    public int Batch { get; init; } = 16;
    public int Seq { get; init; } = 64;
    public int PretrainSteps { get; init; } = 500;

    /// <summary>Extra Stage I steps for the arithmetic corpus (its lookups are learned late).</summary>
    public int ArithExtraPretrainSteps { get; init; } = 300;
    public int GateSteps { get; init; } = 50;
    public int ContinueSteps { get; init; } = 40;
    public double PretrainLr { get; init; } = 3e-3;
    public double ContinueLr { get; init; } = 1e-4;
    public double WeightDecay { get; init; } = 0.01;
    public int EvalRows { get; init; } = 256;
    public int LogEvery { get; init; } = 50;
    public long Seed { get; init; } = 1;
}

/// <summary>A LoopRPT setting to try from the shared checkpoint.</summary>
internal sealed record Variant(string Name, double LearningRate, LoopRptOptions Options)
{
    public string Describe() => string.Format(CultureInfo.InvariantCulture, "lr={0:G3}, G={1}, sigma={2:G3}, noise={3}, hard={4}, kl={5:G3}",
        LearningRate, Options.Rollouts, Options.Sigma, Options.Noise, Options.HardTokens, Options.KlCoef);
}

internal sealed record CorpusResult(string Corpus, string Markdown, IReadOnlyList<LoopEvaluation> Evaluations);

/// <summary>pretrain (Stage I + gate) → checkpoint → (a) more Stage I vs (b) LoopRPT, equal steps and tokens → evaluate.</summary>
internal sealed class Experiment(Settings s, IReadOnlyList<Variant> variants, string runDir, string outDir, bool reuseBase)
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public CorpusResult Run(string corpus)
    {
        var clock = Stopwatch.StartNew();
        var md = new StringBuilder();
        CharVocab vocab;
        int[] train;
        List<TokenBatch> heldOut;
        List<(int Depth, List<TokenBatch> Batches)> answers = [];
        if (corpus == "arith")
        {
            vocab = ArithmeticCorpus.Vocab;
            train = vocab.Encode(ArithmeticCorpus.Text(100_000, seed: 11));
            (heldOut, answers) = ArithmeticEval(vocab, s.EvalRows, seed: 12345);
        }
        else
        {
            vocab = CharVocab.Printable();
            var all = vocab.Encode(TextCorpus.Load());
            int cut = (int)(all.Length * 0.9);
            train = all[..cut];
            heldOut = LoopEvaluator.Windows(all[cut..], s.Batch, s.Seq, maxBatches: Math.Max(1, s.EvalRows / s.Batch)).ToList();
        }
        long evalTokens = heldOut.Sum(b => b.TargetTokenCount);
        Console.WriteLine($"[{corpus}] vocab {vocab.Size}, train tokens {train.Length:N0}, held-out tokens {evalTokens:N0}");

        var config = new OuroConfig
        {
            VocabSize = vocab.Size, HiddenSize = s.Hidden, IntermediateSize = s.Ffn, NumHiddenLayers = s.Layers,
            NumAttentionHeads = s.Heads, NumKeyValueHeads = s.Heads, TotalUtSteps = s.Loops, RopeTheta = 10000,
            MaxPositionEmbeddings = Math.Max(256, s.Seq), TieWordEmbeddings = false,
        };
        var source = new PackedTokenSource(train, s.Batch, s.Seq, s.Seed);
        var dir = Path.Combine(runDir, corpus);
        int pretrainSteps = s.PretrainSteps + (corpus == "arith" ? s.ArithExtraPretrainSteps : 0);
        var timings = new List<(string, double)>();

        // 1. Pretrain: Stage I then Stage II (gate), saved as the shared checkpoint.
        var baseDir = Path.Combine(dir, "base");
        var t0 = clock.Elapsed.TotalSeconds;
        if (!(reuseBase && ModelDirectory.IsModelDirectory(baseDir)))
        using (var gen = new TorchSharp.torch.Generator((ulong)s.Seed))
        using (var lm = new OuroForCausalLM(config, generator: gen))
        {
            var result = Trainer("pretrain", null).Train(lm, source,
            [
                new TrainingStage(new PretrainObjective(totalSteps: pretrainSteps), pretrainSteps) { LearningRate = s.PretrainLr, WarmupFraction = 0.05 },
                new TrainingStage(new GateObjective(), s.GateSteps) { LearningRate = s.PretrainLr, WarmupFraction = 0.05 },
            ]);
            var meta = new ModelMeta { Step = result.GlobalStep, TokensSeen = result.TokensSeen, Stages = [new("pretrain", pretrainSteps), new("gate", s.GateSteps)] };
            ModelDirectory.Save(baseDir, lm, meta);
        }
        else Console.WriteLine($"[{corpus}] reusing the pretrained checkpoint {baseDir}");
        timings.Add(("pretrain + gate", clock.Elapsed.TotalSeconds - t0));

        // 2. Continue from the same checkpoint: (a) Stage I, (b) LoopRPT variants; same batches (same global steps), same optimizer settings.
        var baseline = ModelDirectory.Load(baseDir);
        var runs = new List<(string Name, OuroForCausalLM Model, TrainingProgress? Last, double Seconds)>();
        t0 = clock.Elapsed.TotalSeconds;
        var control = ModelDirectory.Load(baseDir);
        var controlResult = Trainer("stage1", control.Meta).Train(control.Model, source,
            [new TrainingStage(new PretrainObjective(new PretrainObjectiveOptions { Beta = 0.05, LateBetaFrom = 1 }), s.ContinueSteps) { LearningRate = s.ContinueLr, WeightDecay = s.WeightDecay }]);
        runs.Add(("(a) +Stage I", control.Model, controlResult.LastProgress, clock.Elapsed.TotalSeconds - t0));
        timings.Add(("(a) more Stage I", clock.Elapsed.TotalSeconds - t0));
        foreach (var v in variants)
        {
            t0 = clock.Elapsed.TotalSeconds;
            var student = ModelDirectory.Load(baseDir);
            using var objective = new LoopRptObjective(v.Options);
            var r = Trainer(v.Name, student.Meta).Train(student.Model, source,
                [new TrainingStage(objective, s.ContinueSteps) { LearningRate = v.LearningRate, WeightDecay = s.WeightDecay }]);
            runs.Add(($"(b) {v.Name}", student.Model, r.LastProgress, clock.Elapsed.TotalSeconds - t0));
            timings.Add(($"(b) {v.Name}", clock.Elapsed.TotalSeconds - t0));
        }

        // 3. Evaluate everything on held-out text, buckets by the base model's entropy.
        t0 = clock.Elapsed.TotalSeconds;
        var evaluator = new LoopEvaluator();
        var evals = new List<LoopEvaluation> { evaluator.Evaluate(baseline.Model, heldOut, baseline.Model, "base") };
        evals.AddRange(runs.Select(r => evaluator.Evaluate(r.Model, heldOut, baseline.Model, r.Name)));
        var svg = $"img/pareto-{corpus}.svg";
        ParetoPlot.WriteSvg(Path.Combine(outDir, svg), evals, corpus == "arith" ? "Variable binding (alias chains), all held-out tokens" : "Vim user manual (char level), held-out text");
        File.WriteAllText(Path.Combine(outDir, $"{corpus}.csv"), LoopEvaluation.ToCsv(evals));

        md.Append(C, $"## Corpus: {(corpus == "arith" ? "variable binding, generated alias chains (pointer chasing)" : "Vim user manual, /usr/share/vim/vim90/doc/usr_*.txt (real text)")}\n\n");
        md.Append(C, $"Vocab {vocab.Size} chars; {train.Length:N0} training tokens; held-out {evalTokens:N0} tokens. ");
        md.Append(C, $"Model: hidden {s.Hidden}, {s.Layers} layers × {s.Loops} loops, FFN {s.Ffn}, {config.ParameterCount():N0} parameters. ");
        md.Append(C, $"Batch {s.Batch} × {s.Seq}. Pretrain {pretrainSteps} Stage I + {s.GateSteps} gate steps (lr {s.PretrainLr:G3}); ");
        md.Append(C, $"each continuation {s.ContinueSteps} steps = {(long)s.ContinueSteps * s.Batch * s.Seq:N0} tokens, AdamW wd {s.WeightDecay:G3}, 3% warmup, cosine, clip 1.\n\n");
        md.Append("Continuations: (a) Stage I, lr ").Append(s.ContinueLr.ToString("G3", C)).Append("; ");
        md.Append(string.Join("; ", variants.Select(v => $"(b) {v.Name}: {v.Describe()}"))).Append(".\n\n");
        md.Append("### Next-token accuracy (%) on held-out tokens, buckets by the base model's entropy\n\n");
        md.Append(LoopEvaluation.CompareMarkdown(evals, [0.5, 0.7, 1.0])).Append('\n');
        md.Append(C, $"Pareto curves: ![{corpus}]({svg})\n\n");

        if (answers.Count > 0)
        {
            var answerEval = new LoopEvaluator(new LoopEvaluationOptions { QValues = [0.2, 0.5, 0.7, 0.9, 1.0] });
            md.Append("### Answer digits only (the tokens that need the chain computed), by query depth\n\n");
            md.Append("| depth | model | answers | s1 | s2 | s3 | s4 | q=0.5 acc @ exit | q=0.7 acc @ exit |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
            var pooled = new List<LoopEvaluation>();
            foreach (var (depth, batches) in answers)
            {
                var models = new List<(string, OuroForCausalLM)> { ("base", baseline.Model) };
                models.AddRange(runs.Select(r => (r.Name, r.Model)));
                foreach (var (name, model) in models)
                {
                    var e = answerEval.Evaluate(model, batches, baseline.Model, name)["All"];
                    md.Append(C, $"| {depth} | {name} | {e.Tokens} | {string.Join(" | ", e.StepAccuracy.Select(a => (100 * a).ToString("F1", C)))} | ");
                    md.Append(C, $"{100 * e.AtQ(0.5)!.Accuracy:F1} @ {e.AtQ(0.5)!.MeanExitStep:F2} | {100 * e.AtQ(0.7)!.Accuracy:F1} @ {e.AtQ(0.7)!.MeanExitStep:F2} |\n");
                }
            }
            var allAnswers = answers.SelectMany(a => a.Batches).ToList();
            pooled.Add(answerEval.Evaluate(baseline.Model, allAnswers, baseline.Model, "base"));
            pooled.AddRange(runs.Select(r => answerEval.Evaluate(r.Model, allAnswers, baseline.Model, r.Name)));
            ParetoPlot.WriteSvg(Path.Combine(outDir, "img/pareto-arith-answers.svg"), pooled, "Variable binding: answer digits only (all depths)", ["All", "Hard"]);
            md.Append("\nAnswer digits, all depths: ![answers](img/pareto-arith-answers.svg)\n\n");
        }
        timings.Add(("evaluation", clock.Elapsed.TotalSeconds - t0));

        md.Append("### Last logged training metrics of the continuations\n\n");
        foreach (var r in runs)
            if (r.Last is { } p)
                md.Append(C, $"- {r.Name} ({r.Seconds:F0} s, {p.TokensPerSecond:F0} tok/s): `{p}`\n");
        md.Append("\nWall-clock: ").Append(string.Join(", ", timings.Select(t => string.Format(C, "{0} {1:F0} s", t.Item1, t.Item2)))).Append(".\n\n");

        foreach (var r in runs) r.Model.Dispose();
        baseline.Model.Dispose();
        return new CorpusResult(corpus, md.ToString(), evals);
    }

    private LoopedLmTrainer Trainer(string label, ModelMeta? baseMeta) => new(new TrainerOptions
    {
        LogEvery = s.LogEvery, BaseMeta = baseMeta, Seed = s.Seed,
        Progress = new ConsoleProgress(label),
    });

    /// <summary>Held-out rows of whole lines (no line cut), and per-depth answer-only copies (other targets ignored).</summary>
    private (List<TokenBatch> All, List<(int, List<TokenBatch>)> Answers) ArithmeticEval(CharVocab vocab, int rows, int seed)
    {
        var rng = new Random(seed);
        var rowTokens = new List<int[]>();
        var rowAnswers = new List<List<(int Pos, int Depth)>>();
        var pending = ArithmeticCorpus.Line(rng);
        while (rowTokens.Count < rows)
        {
            var tokens = new List<int>();
            var ans = new List<(int, int)>();
            while (tokens.Count + pending.Line.Length <= s.Seq + 1)
            {
                ans.AddRange(pending.Answers.Select(a => (tokens.Count + a.Index, a.Depth)));
                tokens.AddRange(vocab.Encode(pending.Line));
                pending = ArithmeticCorpus.Line(rng);
            }
            rowTokens.Add(tokens.ToArray());
            rowAnswers.Add(ans);
        }
        List<TokenBatch> Batches(Func<int, int, bool>? keep)
        {
            var list = new List<TokenBatch>();
            for (int i = 0; i < rowTokens.Count; i += s.Batch)
            {
                var chunk = Enumerable.Range(i, Math.Min(s.Batch, rowTokens.Count - i)).ToList();
                var b = TokenBatch.FromWindows(chunk.Select(r => (ReadOnlyMemory<int>)rowTokens[r]).ToList(), s.Seq);
                if (keep is not null)
                    for (int k = 0; k < chunk.Count; k++)
                    {
                        var keepPos = rowAnswers[chunk[k]].Where(a => keep(a.Pos, a.Depth)).Select(a => a.Pos - 1).ToHashSet();   // target at p-1 predicts token p
                        for (int p = 0; p < s.Seq; p++)
                            if (!keepPos.Contains(p)) b.Targets[k * s.Seq + p] = TokenBatch.IgnoreIndex;
                    }
                list.Add(b);
            }
            return list;
        }
        var answers = Enumerable.Range(1, ArithmeticCorpus.MaxDepth).Select(d => (d, Batches((_, depth) => depth == d))).ToList();
        return (Batches(null), answers);
    }

    private sealed class ConsoleProgress(string label) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            string Get(string k) => p.Metrics.TryGetValue(k, out var v) ? string.Join(",", v.Select(x => x.ToString("G3", C))) : "-";
            var extra = p.Stage == "looprpt"
                ? $" pg={Get("pg_loss")} model={Get("model_loss")} R={Get("reward_mean")} Rstd={Get("reward_std")} kl={Get("kl")} exit(t/s)={Get("teacher_exit_step")}/{Get("student_exit_step")} hard_acc=[{Get("hard_acc")}]"
                : $" exit={Get("expected_exit_step")}";
            Console.WriteLine(string.Format(C, "  [{0}] {1} {2}/{3} loss={4:F4} {5:F0} tok/s{6}", label, p.Stage, p.Step, p.StageSteps, p.Loss, p.TokensPerSecond, extra));
        }
    }
}
