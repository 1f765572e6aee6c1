// Adaptive-exit benchmark (issue 5): trains a small looped model on generated text, then measures teacher-forced
// scoring and KV-cached generation throughput at several Q-exit thresholds against q = 1.0 in the same run.
// Usage: dotnet run -c Release --project examples/InferenceBenchmark -- [--steps 300] [--hidden 256] [--markdown out.md]
using System.Diagnostics;
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
manual_seed(opt.Seed);   // TorchSharp 0.107's nn.init.normal_ ignores its generator argument: seed the global RNG too
using var init = new Generator((ulong)opt.Seed);
using var lm = new OuroForCausalLM(config, generator: init);
var corpus = new SyntheticCorpus(opt.Seed);
var trainText = corpus.Generate(400_000, opt.Seed + 1);
var heldOut = corpus.Generate(opt.EvalSequences * opt.SeqLen + 1, opt.Seed + 2);
long parameters = lm.UniqueParameters().Sum(p => p.Param.numel());
Console.WriteLine($"model: hidden {opt.Hidden}, {opt.Layers} layers x {opt.Loops} loops, vocab {config.VocabSize}, {parameters:N0} parameters; torch threads {get_num_threads()}");

var clock = Stopwatch.StartNew();
StageOneTrainer.Train(lm, trainText, opt.Steps, batch: 16, seqLen: opt.SeqLen, lr: 3e-3, beta: 0.05, seed: opt.Seed);
Console.WriteLine($"trained {opt.Steps} steps in {clock.Elapsed.TotalSeconds:F0} s");

var sequences = Enumerable.Range(0, opt.EvalSequences).Select(i => (IReadOnlyList<long>)heldOut.AsSpan(i * opt.SeqLen, opt.SeqLen).ToArray()).ToArray();
double[] qs = [1.0, 0.7, 0.5, 0.3];

// ---- Scoring: best of `reps` interleaved timings per q, so machine noise hits every q alike -----------------------
var scoreRows = new List<string>();
foreach (int batch in opt.ScoreBatches)
{
    var scorers = qs.Select(q => new AdaptiveExitScorer(lm, new AdaptiveExitOptions { Exit = ExitMode.Q(q), BatchSize = batch })).ToArray();
    var best = new double[qs.Length];
    Array.Fill(best, double.MaxValue);
    var summaries = new AdaptiveExitSummary[qs.Length];
    double bestReference = double.MaxValue;
    foreach (var s in scorers) s.Evaluate(sequences.Take(batch));                       // warm-up
    for (int rep = 0; rep < opt.Reps; rep++)
    {
        for (int i = 0; i < qs.Length; i++)
        {
            var sw = Stopwatch.StartNew();
            summaries[i] = scorers[i].Evaluate(sequences);
            best[i] = Math.Min(best[i], sw.Elapsed.TotalSeconds);
        }
        bestReference = Math.Min(bestReference, ReferenceSeconds(lm, sequences, batch, ExitMode.Q(0.5)));
    }
    double baseline = summaries[0].ComputedTokens / best[0];
    for (int i = 0; i < qs.Length; i++)
    {
        var s = summaries[i];
        double tps = s.ComputedTokens / best[i], speedup = tps / baseline, ideal = opt.Loops / s.MeanExitStep;
        scoreRows.Add($"| {batch} | {qs[i]:0.0} | {s.MeanExitStep:F2} | {s.ComputeFraction:F3} | {s.Accuracy:F4} | {s.MeanNll:F3} | {tps:N0} | {speedup:F2}x | {ideal:F2}x | {speedup / ideal:F2} |");
    }
    double refTps = summaries[0].ComputedTokens / bestReference;
    scoreRows.Add($"| {batch} | 0.5, reference (all loops, then select) | {opt.Loops:F2} | 1.000 | | | {refTps:N0} | {refTps / baseline:F2}x | | |");
}

// ---- Generation: greedy continuation of held-out prompts -------------------------------------------------------
var prompts = sequences.Take(opt.GenPrompts).Select(s => (IReadOnlyList<long>)s.Take(16).ToArray()).ToArray();
var genRows = new List<string>();
var generator = new LoopedGenerator(lm);
foreach (int batch in opt.GenBatches)
{
    var bestGen = new double[qs.Length];
    Array.Fill(bestGen, double.MaxValue);
    var meanLoops = new double[qs.Length];
    long produced = 0;
    for (int rep = 0; rep <= opt.Reps; rep++)                                          // rep 0 is the warm-up
        for (int i = 0; i < qs.Length; i++)
        {
            var options = new GenerationOptions { MaxNewTokens = opt.GenTokens, Temperature = 0, Exit = ExitMode.Q(qs[i]) };
            var sw = Stopwatch.StartNew();
            var results = prompts.Chunk(batch).SelectMany(chunk => generator.GenerateBatch(chunk, options)).ToArray();
            if (rep > 0) bestGen[i] = Math.Min(bestGen[i], sw.Elapsed.TotalSeconds);
            produced = results.Sum(r => r.Tokens.Length);
            meanLoops[i] = results.SelectMany(r => r.LoopsUsed).Average();
        }
    for (int i = 0; i < qs.Length; i++)
    {
        double tps = produced / bestGen[i], baseline = produced / bestGen[0];
        genRows.Add($"| {batch} | {qs[i]:0.0} | {meanLoops[i]:F2} | {tps:N0} | {tps / baseline:F2}x | {opt.Loops / meanLoops[i]:F2}x |");
    }
}

var md = new StringBuilder();
md.AppendLine($"Scoring: {opt.EvalSequences} held-out sequences of {opt.SeqLen} tokens; best of {opt.Reps} interleaved runs.").AppendLine();
md.AppendLine("| batch | q | mean exit step | compute fraction | next-token acc | NLL (nats) | tokens/s | speedup vs q=1 | T / mean exit | speedup / ideal |");
md.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
foreach (var r in scoreRows) md.AppendLine(r);
md.AppendLine().AppendLine($"Generation: {opt.GenPrompts} prompts of 16 tokens, {opt.GenTokens} new tokens each, greedy, KV cache; best of {opt.Reps} runs.").AppendLine();
md.AppendLine("| batch | q | mean loops / token | tokens/s | speedup vs q=1 | T / mean loops |");
md.AppendLine("|---|---|---|---|---|---|");
foreach (var r in genRows) md.AppendLine(r);
var sample = generator.Generate(prompts[0], new GenerationOptions { MaxNewTokens = 60, Temperature = 0.8, TopP = 0.9, Seed = 1, Exit = ExitMode.Q(0.5) });
md.AppendLine().AppendLine($"Sample (q = 0.5, T = 0.8, top-p 0.9): `{SyntheticCorpus.Decode(prompts[0])}|{SyntheticCorpus.Decode(sample.Tokens)}` (mean loops {sample.MeanLoops:F2})");
Console.WriteLine();
Console.WriteLine(md.ToString());
if (opt.Markdown is { } path) File.WriteAllText(path, md.ToString());

// "Compute all loops, then select" as the reference code does: seconds to score every sequence.
static double ReferenceSeconds(OuroForCausalLM lm, IReadOnlyList<IReadOnlyList<long>> sequences, int batch, ExitMode mode)
{
    var sw = Stopwatch.StartNew();
    using var noGrad = no_grad();
    foreach (var chunk in sequences.Chunk(batch))
    {
        using var scope = NewDisposeScope();
        var (ids, _) = AdaptiveExitScorer.Pad(chunk);
        var output = lm.Forward(ids);
        mode.Logits(lm, output).argmax(-1).sum().item<long>();
    }
    return sw.Elapsed.TotalSeconds;
}

internal sealed record Args(int Steps, int Hidden, int Layers, int Loops, int SeqLen, int EvalSequences, int[] ScoreBatches,
    int GenPrompts, int GenTokens, int[] GenBatches, int Reps, int Seed, int Threads, string? Markdown)
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
        int[] Ints(string name, string fallback) => (map.GetValueOrDefault(name) ?? fallback).Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        return new Args(Int("steps", 300), Int("hidden", 256), Int("layers", 2), Int("loops", 4), Int("seq", 128), Int("eval-seqs", 128),
            Ints("score-batches", "8,32"), Int("gen-prompts", 8), Int("gen-tokens", 48), Ints("gen-batches", "1,8"), Int("reps", 3),
            Int("seed", 1), Int("threads", 1), map.GetValueOrDefault("markdown"));
    }
}
