// Adaptive-exit benchmark (issue 5): trains a small looped model on generated text, then measures teacher-forced
// scoring and KV-cached generation throughput at several Q-exit thresholds against q = 1.0 in the same run.
// Usage: dotnet run -c Release --project examples/InferenceBenchmark -- [--steps 500] [--lr 3e-3] [--hidden 128] [--reps 5] [--threads 1]
//        [--score-batches 8,32|none] [--gen-batches 1,8|none] [--weights trained.bin (reused when present)] [--markdown table.md]
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using InferenceBenchmark;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

var opt = Args.Parse(args);
TorchNative.EnsureLoaded();
set_num_threads(opt.Threads);
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
Thread.CurrentThread.CurrentCulture = CultureInfo.InvariantCulture;

var config = new OuroConfig
{
    VocabSize = SyntheticCorpus.VocabSize, HiddenSize = opt.Hidden, IntermediateSize = opt.Hidden * 11 / 4, NumHiddenLayers = opt.Layers,
    NumAttentionHeads = 4, NumKeyValueHeads = 4, TotalUtSteps = opt.Loops, RopeTheta = 10_000, MaxPositionEmbeddings = 1024,
};
manual_seed(opt.Seed);   // the model's init uses its own generator; this covers any global draw elsewhere
using var init = new Generator((ulong)opt.Seed);
using var lm = new OuroForCausalLM(config, generator: init);
var corpus = new SyntheticCorpus(opt.Seed);
var trainText = corpus.Generate(400_000, opt.Seed + 1);
var heldOut = corpus.Generate(opt.EvalSequences * opt.SeqLen + 1, opt.Seed + 2);
long parameters = lm.UniqueParameters().Sum(p => p.Param.numel());
Console.WriteLine($"model: hidden {opt.Hidden}, {opt.Layers} layers x {opt.Loops} loops, vocab {config.VocabSize}, {parameters:N0} parameters; torch threads {get_num_threads()}");

var clock = Stopwatch.StartNew();
if (opt.Weights is { } saved && File.Exists(saved))
{
    lm.load(saved);
    lm.eval();
    Console.WriteLine($"loaded trained weights from {saved}");
}
else
{
    StageOneTrainer.Train(lm, trainText, opt.Steps, batch: 16, seqLen: opt.SeqLen, lr: opt.LearningRate, beta: 0.05, seed: opt.Seed);
    Console.WriteLine($"trained {opt.Steps} steps in {clock.Elapsed.TotalSeconds:F0} s");
    if (opt.Weights is { } weightsFile) lm.save(weightsFile);
}

var sequences = Enumerable.Range(0, opt.EvalSequences).Select(i => (IReadOnlyList<long>)heldOut.AsSpan(i * opt.SeqLen, opt.SeqLen).ToArray()).ToArray();
double[] qs = [1.0, 0.7, 0.5, 0.3];

// ---- Scoring: best of `reps` interleaved timings per q, so machine noise hits every q alike -----------------------
var scoreRows = new List<string>();
foreach (int batch in opt.ScoreBatches)
{
    var scorers = qs.Select(q => new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(q), BatchSize = batch })).ToArray();
    var best = Enumerable.Repeat(Timing.Worst, qs.Length).ToArray();
    var summaries = new AdaptiveExitSummary[qs.Length];
    var bestReference = Timing.Worst;
    foreach (var s in scorers) s.Evaluate(sequences.Take(batch));                       // warm-up
    for (int rep = 0; rep < opt.Reps; rep++)
    {
        for (int i = 0; i < qs.Length; i++)
        {
            var start = Timing.Now();
            summaries[i] = scorers[i].Evaluate(sequences);
            best[i] = best[i].Min(Timing.Now() - start);
        }
        var refStart = Timing.Now();
        ReferenceScore(lm, sequences, batch, ExitMode.Q(0.5));
        bestReference = bestReference.Min(Timing.Now() - refStart);
    }
    for (int i = 0; i < qs.Length; i++)
    {
        var s = summaries[i];
        double tps = s.ComputedTokens / best[i].Wall, speedup = best[0].Wall / best[i].Wall, cpuSpeedup = best[0].Cpu / best[i].Cpu;
        double ideal = opt.Loops / s.MeanExitStep;
        scoreRows.Add($"| {batch} | {qs[i]:0.0} | {s.MeanExitStep:F2} | {s.ComputeFraction:F3} | {s.Accuracy:F4} | {s.MeanNll:F3} | {tps:N0} | {speedup:F2}x | {ideal:F2}x | {speedup / ideal:F2} | {cpuSpeedup / ideal:F2} |");
    }
    double refTps = summaries[0].ComputedTokens / bestReference.Wall;
    scoreRows.Add($"| {batch} | 0.5, reference: all loops, then select | {opt.Loops:F2} | 1.000 | | | {refTps:N0} | {best[0].Wall / bestReference.Wall:F2}x | | | |");
}

// ---- Generation: greedy continuation of held-out prompts -------------------------------------------------------
// Decoding ticks from the library's meter (deterministic, like the tensor counts).
var ticks = new Dictionary<string, long>();
using var meter = new MeterListener();
meter.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == InferenceMetrics.MeterName) l.EnableMeasurementEvents(instrument); };
meter.SetMeasurementEventCallback<long>((instrument, value, _, _) => { lock (ticks) ticks[instrument.Name] = ticks.GetValueOrDefault(instrument.Name) + value; });
meter.Start();
long Ticks(string name) { lock (ticks) return ticks.GetValueOrDefault(name); }

var prompts = sequences.Take(opt.GenPrompts).Select(s => (IReadOnlyList<long>)s.Take(16).ToArray()).ToArray();
var genRows = new List<string>();
var generator = new LoopedGenerator(lm);
KvCacheMode[] kvModes = [KvCacheMode.PerLoop, KvCacheMode.LastLoop];
foreach (int batch in opt.GenBatches)
{
    // Every (KV rule, q) pair, interleaved per repetition; each rule's speedup is against its own q = 1.0.
    var cases = kvModes.SelectMany(kv => qs.Select(q => (Kv: kv, Q: q))).ToArray();
    var bestGen = Enumerable.Repeat(Timing.Worst, cases.Length).ToArray();
    var outputs = new IReadOnlyList<GeneratedSequence>[cases.Length];
    var created = new long[cases.Length];                                              // tensors created per run (deterministic)
    var runTicks = new long[cases.Length];
    var runRowLoops = new long[cases.Length];
    for (int rep = 0; rep <= opt.Reps; rep++)                                          // rep 0 is the warm-up
        for (int i = 0; i < cases.Length; i++)
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = opt.GenTokens, Temperature = 0, Exit = ExitMode.Q(cases[i].Q), BatchSize = batch, KvCache = cases[i].Kv,
            };
            long before = TensorsCreated(), ticksBefore = Ticks("looprpt.decode.ticks"), rowLoopsBefore = Ticks("looprpt.decode.row_loops");
            var start = Timing.Now();
            outputs[i] = generator.GenerateBatch(prompts, options);                       // continuous batching: `batch` rows at a time
            if (rep > 0) bestGen[i] = bestGen[i].Min(Timing.Now() - start);
            created[i] = TensorsCreated() - before;
            runTicks[i] = Ticks("looprpt.decode.ticks") - ticksBefore;
            runRowLoops[i] = Ticks("looprpt.decode.row_loops") - rowLoopsBefore;
        }
    for (int i = 0; i < cases.Length; i++)
    {
        int baseline = Array.FindIndex(cases, c => c.Kv == cases[i].Kv && c.Q == 1.0);
        int perLoop = Array.FindIndex(cases, c => c.Kv == KvCacheMode.PerLoop && c.Q == cases[i].Q);
        long produced = outputs[i].Sum(r => r.Tokens.Length);
        double meanLoops = outputs[i].SelectMany(r => r.LoopsUsed).Average();
        double tps = produced / bestGen[i].Wall, speedup = bestGen[baseline].Wall / bestGen[i].Wall, ideal = opt.Loops / meanLoops;
        // Greedy tokens identical to the exact per-loop rule at the same q, position by position.
        double same = outputs[i].Zip(outputs[perLoop]).Sum(p => p.First.Tokens.Zip(p.Second.Tokens).Count(t => t.First == t.Second)) / (double)produced;
        string kv = cases[i].Kv == KvCacheMode.PerLoop ? "per loop" : "last loop";
        genRows.Add($"| {batch} | {kv} | {cases[i].Q:0.0} | {meanLoops:F2} | {tps:N0} | {speedup:F2}x | {ideal:F2}x | {speedup / ideal:F2} | {bestGen[baseline].Cpu / bestGen[i].Cpu / ideal:F2} | {same:P0} | {created[i] / (double)produced:N0} | {runTicks[i]:N0} | {runRowLoops[i] / (double)(runTicks[i] * batch):P0} |");
    }
}

var md = new StringBuilder();
md.AppendLine($"Scoring: {opt.EvalSequences} held-out sequences of {opt.SeqLen} tokens; best of {opt.Reps} interleaved runs.").AppendLine();
md.AppendLine("| batch | q | mean exit step | compute fraction | next-token acc | NLL (nats) | tokens/s | speedup vs q=1 | ideal T / mean exit | speedup / ideal | CPU-time speedup / ideal |");
md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
foreach (var r in scoreRows) md.AppendLine(r);
md.AppendLine().AppendLine($"Generation: {opt.GenPrompts} prompts of 16 tokens, {opt.GenTokens} new tokens each, greedy, KV cache, `batch` rows decoding at a time; best of {opt.Reps} runs.").AppendLine();
md.AppendLine("| batch | KV cache | q | mean loops / token | tokens/s | speedup vs q=1 | ideal T / mean loops | speedup / ideal | CPU-time speedup / ideal | tokens as per loop | tensors created / token | decode ticks | row occupancy |");
md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
foreach (var r in genRows) md.AppendLine(r);
var sample = generator.Generate(prompts[0], new GenerationOptions { MaxNewTokens = 60, Temperature = 0.8, TopP = 0.9, Seed = 1, Exit = ExitMode.Q(0.5) });
md.AppendLine().AppendLine($"Sample (q = 0.5, T = 0.8, top-p 0.9): `{SyntheticCorpus.Decode(prompts[0])}|{SyntheticCorpus.Decode(sample.Tokens)}` (mean loops {sample.MeanLoops:F2})");
Console.WriteLine();
Console.WriteLine(md.ToString());
if (opt.Markdown is { } path) File.WriteAllText(path, md.ToString());

// Tensor objects created on this thread: each tensor operation creates one, so this counts dispatches without noise.
static long TensorsCreated() => TorchSharp.DisposeScopeManager.Statistics.CreatedInScopeCount + TorchSharp.DisposeScopeManager.Statistics.CreatedOutsideScopeCount;

// "Compute all loops, then select" as the reference code does.
static void ReferenceScore(OuroForCausalLM lm, IReadOnlyList<IReadOnlyList<long>> sequences, int batch, ExitMode mode)
{
    using var noGrad = no_grad();
    foreach (var chunk in sequences.Chunk(batch))
    {
        using var scope = NewDisposeScope();
        var (ids, _) = AdaptiveExitScorer.Pad(chunk);
        var output = lm.Forward(ids);
        mode.Logits(lm, output).argmax(-1).sum().item<long>();
    }
}

/// <summary>Wall-clock and process CPU seconds; the CPU figure is less disturbed by other jobs on a shared machine.</summary>
internal readonly record struct Timing(double Wall, double Cpu)
{
    public static Timing Worst => new(double.MaxValue, double.MaxValue);

    public static Timing Now() => new(Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency, Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds);

    public static Timing operator -(Timing a, Timing b) => new(a.Wall - b.Wall, a.Cpu - b.Cpu);

    public Timing Min(Timing other) => new(Math.Min(Wall, other.Wall), Math.Min(Cpu, other.Cpu));
}

internal sealed record Args(int Steps, int Hidden, int Layers, int Loops, int SeqLen, int EvalSequences, int[] ScoreBatches,
    int GenPrompts, int GenTokens, int[] GenBatches, int Reps, int Seed, int Threads, double LearningRate, string? Markdown, string? Weights)
{
    public static Args Parse(string[] args)
    {
        var map = new Dictionary<string, string>();
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--")) throw new ArgumentException($"Expected --name value pairs, got '{args[i]}'.", nameof(args));
            map[args[i][2..]] = args[i + 1];
        }
        int Int(string name, int fallback) => map.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        int[] Ints(string name, string fallback) => (map.GetValueOrDefault(name) ?? fallback) is "none" ? []
            : (map.GetValueOrDefault(name) ?? fallback).Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        return new Args(Int("steps", 500), Int("hidden", 128), Int("layers", 2), Int("loops", 4), Int("seq", 128), Int("eval-seqs", 64),
            Ints("score-batches", "8,32"), Int("gen-prompts", 32), Int("gen-tokens", 32), Ints("gen-batches", "1,8"), Int("reps", 5),
            Int("seed", 1), Int("threads", 1),
            map.TryGetValue("lr", out var lr) ? double.Parse(lr, CultureInfo.InvariantCulture) : 3e-3,
            map.GetValueOrDefault("markdown"), map.GetValueOrDefault("weights"));
    }
}
