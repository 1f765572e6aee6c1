// Real-size inference benchmark (issue 20): the Ouro-1.4B shape on this machine's CPU, with the hardware's own limits
// measured in the same run. No download: random weights unless --checkpoint DIR names an Ouro/LoopRpt model directory.
//
//   dotnet run -c Release --project examples/RealSizeBenchmark -- [--checkpoint DIR] [--dtypes float32,bfloat16]
//       [--prompts 16,128] [--score-tokens 128] [--decode-tokens 8] [--q 0.5] [--threads N] [--layers N (smoke runs)]
//       [--save DIR (write the random model as a model directory and stop, to time loading a file with --checkpoint DIR)]
//
// Prints, per dtype: the matrix-product rate and memory bandwidth; load time and peak RSS; prefill tokens/s and MFU per
// prompt length; decode tokens/s at batch 1 (full depth and Q-exit) against the memory-bandwidth bound; scoring
// tokens/s, MFU and peak RSS. Peak RSS is the kernel's high-water mark, reset before each measurement.
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Inference;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
Thread.CurrentThread.CurrentCulture = CultureInfo.InvariantCulture;
string? Arg(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
int[] Ints(string? s, int[] d) => s is null ? d : s.Split(',').Select(int.Parse).ToArray();
var checkpoint = Arg("--checkpoint");
var dtypes = (Arg("--dtypes") ?? "float32").Split(',');
var prompts = Ints(Arg("--prompts"), [16, 128]);
int scoreTokens = int.Parse(Arg("--score-tokens") ?? "128"), decodeTokens = int.Parse(Arg("--decode-tokens") ?? "8");
double q = double.Parse(Arg("--q") ?? "0.5");
foreach (var d in dtypes) if (d is not ("float32" or "bfloat16")) throw new ArgumentException($"--dtypes: '{d}' is neither float32 nor bfloat16.");
if (checkpoint is not null && !Directory.Exists(checkpoint)) throw new DirectoryNotFoundException($"--checkpoint '{checkpoint}' does not exist.");
TorchNative.EnsureLoaded();
if (Arg("--threads") is { } t) set_num_threads(int.Parse(t));
var flags = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags"), "") : "";
string Has(string f) => flags.Split(' ').Contains(f) ? f : "";
Console.WriteLine($"cpu: {Environment.ProcessorCount} logical cores, torch threads {get_num_threads()}, features: {string.Join(' ', new[] { Has("avx2"), Has("avx512f"), Has("avx512_bf16"), Has("amx_bf16") }.Where(x => x.Length > 0))}");

foreach (var dtypeName in dtypes)
{
    var dtype = dtypeName == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
    int elt = dtype == ScalarType.BFloat16 ? 2 : 4;
    Console.WriteLine($"\n== {dtypeName}");
    double gemm = GemmRate(dtype), bandwidth = Bandwidth();
    Console.WriteLine($"hardware: matrix product {gemm:F1} GFLOP/s ({dtypeName}, 1024x2048 @ 2048x5632), memory read bandwidth {bandwidth:F1} GB/s (sum over 1 GiB)");

    ResetPeak();
    var clock = Stopwatch.StartNew();
    OuroForCausalLM lm;
    if (checkpoint is not null) lm = OuroCheckpoint.Load(checkpoint, new OuroLoadOptions { DType = dtype }).DetachModel();
    else
    {
        var config = OuroConfig.Ouro1_4B();
        if (Arg("--layers") is { } l) config.NumHiddenLayers = int.Parse(l);
        using var g = new Generator(1);
        lm = new OuroForCausalLM(config, null, dtype, g);
    }
    lm.eval();
    if (Arg("--save") is { } save)
    {
        // Writes the model as a LoopRpt model directory (to measure loading a real file with --checkpoint), then stops.
        LoopRpt.Checkpoints.ModelDirectory.Save(save, lm, new LoopRpt.Checkpoints.ModelMeta());
        Console.WriteLine($"saved to {save}");
        return;
    }
    var c = lm.Config;
    Console.WriteLine($"load: {clock.Elapsed.TotalSeconds:F1} s ({(checkpoint is null ? "random weights drawn" : checkpoint)}), peak RSS {PeakGiB():F2} GiB");
    long vocabParams = (long)c.VocabSize * c.HiddenSize;
    long allParams = lm.parameters().Sum(p => p.numel());
    long layerParams = allParams - vocabParams * (c.TieWordEmbeddings ? 1 : 2);   // per loop: the layers' weights (norms, gate included)
    double weightsGiB = allParams * (double)elt / (1L << 30);
    Console.WriteLine($"model: {c.NumHiddenLayers} layers x {c.TotalUtSteps} loops, hidden {c.HiddenSize}, vocab {c.VocabSize}, {allParams / 1e9:F3} B parameters = {weightsGiB:F2} GiB in {dtypeName}");
    var rng = new Random(5);
    long[] Ids(int n) => Enumerable.Range(0, n).Select(_ => (long)rng.Next(c.VocabSize)).ToArray();
    double Flops(double tokens, double loops) => 2 * tokens * (layerParams * loops + vocabParams);   // matrix products only
    var gen = new LoopedGenerator(lm);

    foreach (int n in prompts)
    {
        var prompt = Ids(n);
        ResetPeak();
        clock.Restart();
        gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 1, Exit = ExitMode.Last });
        double s = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"prefill {n,4} tokens: {s:F2} s, {n / s:F1} tokens/s, MFU {Flops(n, c.TotalUtSteps) / s / 1e9 / gemm:P0} of this run's {dtypeName} rate, peak RSS {PeakGiB():F2} GiB");
    }

    foreach (var (name, exit) in new[] { ("full depth", ExitMode.Last), ($"q = {q}", ExitMode.Q(q)) })
    {
        var prompt = Ids(16);
        clock.Restart();
        gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 1, Exit = exit });
        double prefill = clock.Elapsed.TotalSeconds;
        ResetPeak();
        clock.Restart();
        var r = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 1 + decodeTokens, Exit = exit, StopTokens = [] });
        double s = clock.Elapsed.TotalSeconds - prefill;
        double meanLoops = r.LoopsUsed.Skip(1).DefaultIfEmpty(c.TotalUtSteps).Average();
        double bytesPerToken = (layerParams * meanLoops + vocabParams) * elt;
        double bound = bandwidth * 1e9 / bytesPerToken;
        Console.WriteLine($"decode batch 1, {name}: {decodeTokens / s:F2} tokens/s ({s / decodeTokens:F2} s per token), mean loops {meanLoops:F2}, " +
                          $"bandwidth bound {bound:F2} tokens/s -> {decodeTokens / s / bound:P0} of it, peak RSS {PeakGiB():F2} GiB");
    }

    foreach (var (name, exit) in new[] { ("q = 1", ExitMode.Q(1.0)), ($"q = {q}", ExitMode.Q(q)) })
    {
        using var scope = NewDisposeScope();
        var ids = tensor(Ids(scoreTokens), [1, scoreTokens]);
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitOptions { Exit = exit });
        ResetPeak();
        clock.Restart();
        using var score = scorer.Score(ids);
        double s = clock.Elapsed.TotalSeconds;
        double meanLoops = score.MeanExitStep;
        Console.WriteLine($"score {scoreTokens} tokens, {name}: {s:F2} s, {scoreTokens / s:F1} tokens/s, mean loops {meanLoops:F2}, " +
                          $"MFU {Flops(scoreTokens, meanLoops) / s / 1e9 / gemm:P0}, peak RSS {PeakGiB():F2} GiB (weights {weightsGiB:F2} GiB)");
    }
    lm.Dispose();
}

static double GemmRate(ScalarType dtype)
{
    using var scope = NewDisposeScope();
    using var g = new Generator(3);
    var a = randn([1024, 2048], generator: g).to(dtype);
    var b = randn([2048, 5632], generator: g).to(dtype);
    matmul(a, b).Dispose();
    var clock = Stopwatch.StartNew();
    int reps = 0;
    while (clock.Elapsed.TotalSeconds < 2 || reps < 2) { matmul(a, b).Dispose(); reps++; }
    return 2.0 * 1024 * 2048 * 5632 * reps / clock.Elapsed.TotalSeconds / 1e9;
}

static double Bandwidth()
{
    // Read bandwidth (what decoding needs: every weight read once per use): a sum over 1 GiB of float32.
    using var scope = NewDisposeScope();
    var src = ones(1L << 28);
    src.sum().Dispose();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < 4; i++) src.sum().Dispose();
    return 4.0 * (1L << 30) / clock.Elapsed.TotalSeconds / 1e9;
}

// The kernel's peak-RSS counter (VmHWM) is reset by writing 5 to clear_refs (Linux).
static void ResetPeak() { try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { } }

static double PeakGiB()
{
    var line = File.Exists("/proc/self/status") ? File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:")) : null;
    return line is null ? double.NaN : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / (1024.0 * 1024);
}
