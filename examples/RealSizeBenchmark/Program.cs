// Real-size inference benchmark (issues 20, 28): the Ouro-1.4B shape on this machine's CPU, with the hardware's own
// limits measured in the same run. No download: random weights unless --checkpoint DIR names a model directory.
// `--help` prints the options (the text below, Usage); docs/benchmarks.md has the figures and how to read them.
//
// Prints, per mode and torch thread count: the CPU's features, the matrix-product rate of float32 and bfloat16 and the
// memory read bandwidth; load time and peak RSS; prefill tokens/s and MFU per prompt length; decode tokens/s per batch
// size at full depth and with Q-exit, against the memory-bandwidth bound; scoring tokens/s, MFU and peak RSS; and, at
// the end, one summary table with every figure as a ratio of its bound and the bars of issue 28.
// Peak RSS is the kernel's high-water mark, reset before each measurement.
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Inference;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Model.Kernels;
using LoopRpt.Native;
using static TorchSharp.torch;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
Thread.CurrentThread.CurrentCulture = CultureInfo.InvariantCulture;
const string Usage = """
    RealSizeBenchmark: inference at the Ouro-1.4B shape (random weights unless --checkpoint), against this CPU's limits.

      dotnet run -c Release --project examples/RealSizeBenchmark -- [options]

    Options (lists are comma separated):
      --help, -h               print this and exit
      --dtypes LIST            float32, bfloat16 (bfloat16 weights, automatic compute policy), bfloat16-native,
                               bfloat16-f32 (the policy forced); default float32,bfloat16 (--modes is the same option)
      --only LIST              what to measure: prefill, decode, score (default all three); the hardware limits the
                               chosen measurements need are always measured
      --threads LIST           torch thread counts, each measured in turn on the same loaded model (default: torch's)
      --layers N               layers of the random model (default 24, the 1.4B shape); fewer for quick smoke runs,
                               every figure and bound is then that smaller model's
      --prompts LIST           prefill prompt lengths (default 16,128,512)
      --decode-batches LIST    decode batch sizes (default 1,8)
      --decode-tokens N        tokens decoded per measurement (default 8)
      --decode-prompt N        prompt length of each decode row (default 16)
      --q X                    the Q-exit threshold of the adaptive measurements, in [0, 1] (default 0.5)
      --score-tokens N         tokens scored (default 128; 0 skips scoring)
      --checkpoint DIR         load a model directory instead of drawing random weights
      --save DIR               write the random model as a model directory and stop
      --profile                tables of where the time goes, per prefill and per decoding step
      --linear                 only time the MLP projections per dtype and row count, then stop
      --attention              only time a decoding step's attention (batch 8, 16 heads of 128, keys and values in the
                               cache's layout, contexts 24 to 4,096): libtorch against the own kernel, per dtype and
                               thread count, as read GB/s of the keys and values, then stop
      --kernels                only calibrate the decode products of the 1.4B shapes (libtorch against the own kernel,
                               per dtype, rows 1 and 8, each thread count), print the times as read GB/s, then stop
      --decode-kernel LIST     auto (measured per shape, the default), torch, own: who runs the decode products (the
                               environment variable LOOPRPT_DECODE_KERNEL sets the default); with several, each decode
                               measurement runs them in turn on the same model and prints each as a ratio of the first;
                               the bars and the other measurements use the last
      --decode-repeats N       runs per decode measurement and kernel mode, the fastest kept (default 1)

    Quick decode check (well under a minute per dtype and thread count after the ~10 s load):
      --only decode --decode-batches 1 --decode-tokens 4 --threads 1,2
    """;

string[] known = ["--help", "-h", "--dtypes", "--modes", "--only", "--threads", "--layers", "--prompts", "--decode-batches", "--decode-tokens",
                  "--decode-prompt", "--q", "--score-tokens", "--checkpoint", "--save", "--profile", "--linear", "--kernels", "--decode-kernel", "--decode-repeats", "--attention"];
string[] flags = ["--help", "-h", "--profile", "--linear", "--kernels", "--attention"];
for (int i = 0; i < args.Length; i++)
{
    if (!known.Contains(args[i])) { Console.Error.WriteLine($"unknown option '{args[i]}'\n\n{Usage}"); return 2; }
    if (!flags.Contains(args[i])) i++;
}
if (args.Contains("--help") || args.Contains("-h")) { Console.WriteLine(Usage); return 0; }
string? Arg(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
int[] Ints(string name, int[] d)
{
    var s = Arg(name);
    if (s is null) return d;
    var values = s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => int.TryParse(v, out var n) && n >= 0 ? n : throw new ArgumentException($"{name}: '{v}' is not a non-negative integer.")).ToArray();
    return values;
}
var checkpoint = Arg("--checkpoint");
var modes = (Arg("--dtypes") ?? Arg("--modes") ?? "float32,bfloat16").Split(',', StringSplitOptions.RemoveEmptyEntries);
var only = (Arg("--only") ?? "prefill,decode,score").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
foreach (var o in only)
    if (o is not ("prefill" or "decode" or "score")) throw new ArgumentException($"--only: '{o}' is not one of prefill, decode, score.");
var prompts = only.Contains("prefill") ? Ints("--prompts", [16, 128, 512]) : [];
var decodeBatches = only.Contains("decode") ? Ints("--decode-batches", [1, 8]).Where(b => b > 0).ToArray() : [];
int scoreTokens = only.Contains("score") ? Ints("--score-tokens", [128])[0] : 0, decodeTokens = Math.Max(1, Ints("--decode-tokens", [8])[0]);
int decodePrompt = Math.Max(1, Ints("--decode-prompt", [16])[0]);
int? layers = Arg("--layers") is { } ls ? Ints("--layers", [0])[0] : null;
if (layers is 0) throw new ArgumentOutOfRangeException("--layers", layers, "--layers must be at least 1.");
double q = double.Parse(Arg("--q") ?? "0.5");
bool profile = args.Contains("--profile");     // print where the time goes in each prefill and decoding step
if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException("--q", q, "--q must lie in [0, 1].");
foreach (var m in modes)
    if (m is not ("float32" or "bfloat16" or "bfloat16-native" or "bfloat16-f32"))
        throw new ArgumentException($"--dtypes: '{m}' is not one of float32, bfloat16, bfloat16-native, bfloat16-f32.");
if (checkpoint is not null && !Directory.Exists(checkpoint)) throw new DirectoryNotFoundException($"--checkpoint '{checkpoint}' does not exist.");
TorchNative.EnsureLoaded();
var threadCounts = Ints("--threads", [get_num_threads()]).Select(n => Math.Max(1, n)).ToArray();
var cpu = CpuFeatures.Current;
Console.WriteLine($"cpu: {Environment.ProcessorCount} logical cores, torch threads {string.Join(",", threadCounts)} (default {get_num_threads()}), features: {cpu}; " +
                  $"bfloat16 auto policy here: {BFloat16ComputePolicy.Resolve(BFloat16Compute.Auto, cpu)}");
var kernels = (Arg("--decode-kernel") ?? DecodeKernelPolicy.Mode.ToString()).Split(',', StringSplitOptions.RemoveEmptyEntries).Select(DecodeKernelPolicy.Parse).Distinct().ToArray();
int decodeRepeats = Math.Max(1, Ints("--decode-repeats", [1])[0]);
DecodeKernelPolicy.Mode = kernels[^1];
Console.WriteLine($"decode products: {string.Join(", ", kernels)} (own kernel vectors: {FewRowsKernelInfo()})");
Console.WriteLine($"libtorch's OpenMP spinning: {TorchNative.OpenMpSpinning}");
Console.WriteLine($"huge pages: {LoopRpt.Model.HugePages.Description}");
if (args.Contains("--attention"))
{
    // One decoding step's attention per layer and loop: 8 rows, one query each, 16 heads of 128 against a cache laid out
    // (B, positions, heads, D) as LoopKvCache's, with an additive mask (the decoders pass one for ragged rows).
    foreach (int n in threadCounts)
    {
        set_num_threads(n);
        double bw = Bandwidth();
        Console.WriteLine($"\n-- {n} torch thread(s), read bandwidth {bw:F1} GB/s");
        foreach (int len in new[] { 24, 256, 1024, 4096 })
            foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var query = randn(8, 16, 1, 128).to_type(dt);
                var k = randn(8, len, 16, 128).to_type(dt).transpose(1, 2);
                var v = randn(8, len, 16, 128).to_type(dt).transpose(1, 2);
                var mask = zeros(8, 1, 1, len).to_type(dt);
                double bytes = 2.0 * k.numel() * k.element_size();
                double torchSec = Fastest(() => { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(query, k, v, mask); }, 1.0);
                double ownSec = Fastest(() => { using var s = NewDisposeScope(); DecodeKernelPolicy.Attention(query, k, v, mask); }, 1.0);
                Console.WriteLine($"context {len,5}, {dt,-8}: libtorch {torchSec * 1e3,8:F3} ms ({bytes / torchSec / 1e9,5:F1} GB/s = {bytes / torchSec / 1e9 / bw,4:P0}), " +
                                  $"own {ownSec * 1e3,8:F3} ms ({bytes / ownSec / 1e9,5:F1} GB/s = {bytes / ownSec / 1e9 / bw,4:P0}) -> {torchSec / ownSec:F1}x");
            }
    }
    return 0;
}
if (args.Contains("--kernels"))
{
    // Every decode product shape of the 1.4B model per dtype and row count, calibrated as a decoding step would.
    foreach (int n in threadCounts)
    {
        set_num_threads(n);
        double bw = Bandwidth();
        Console.WriteLine($"\n-- {n} torch thread(s), read bandwidth {bw:F1} GB/s");
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var (inF, outF) in new[] { (2048, 2048), (2048, 5632), (5632, 2048), (2048, 49152) })
                foreach (int rows in new[] { 1, 8 })
                {
                    // Enough copies of the weight (256 MiB at least) that each call reads its weights from memory, as decoding does.
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    double bytes = (double)inF * outF * (dt == ScalarType.BFloat16 ? 2 : 4);
                    var copies = Enumerable.Range(0, Math.Max(2, (int)Math.Ceiling((256 << 20) / bytes))).Select(_ => new OuroLinear(inF, outF, hasBias: false, dtype: dt)).ToList();
                    foreach (var layer in copies) layer.Weight.normal_(0, 0.02);
                    var x = randn([rows, inF]).to_type(dt);
                    string product = $"{rows} x {inF} -> {outF}, {dt} weights, {dt} x, {n} thread(s)";
                    DecodeKernelChoice? choice = null;
                    for (int call = 0; choice is null; call++)
                    {
                        copies[call % copies.Count].forward(x).Dispose();
                        choice = DecodeKernelPolicy.Choices.SingleOrDefault(ch => ch.Product == product);
                    }
                    foreach (var layer in copies) layer.Dispose();
                    Console.WriteLine($"{choice.Product}: " + string.Join(", ", choice.Milliseconds.Select(m => $"{m.Key} {m.Value:F2} ms = {bytes / m.Value / 1e6 / bw:P0}")) +
                                      $" of the read bound -> {choice.Chosen}");
                }
    }
    return 0;
}
set_num_threads(threadCounts[0]);
if (args.Contains("--linear"))
{
    // The 1.4B shape's MLP projections (2048 -> 5632, 5632 -> 2048) per mode and row count: where the model's time goes.
    foreach (var (rows, inF, outF) in new[] { (1, 2048, 5632), (8, 2048, 5632), (128, 2048, 5632), (128, 5632, 2048) })
        foreach (var (name, dt, pol) in new[] { ("float32", ScalarType.Float32, ScalarType.Float32), ("bfloat16 -> f32 compute", ScalarType.BFloat16, ScalarType.Float32), ("bfloat16 native", ScalarType.BFloat16, ScalarType.BFloat16) })
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            using var layer = new OuroLinear(inF, outF, hasBias: false, dtype: dt);
            layer.Weight.normal_(0, 0.02);
            var x = randn([rows, inF]).to_type(pol);
            double sec = Fastest(() => layer.forward(x).Dispose(), 1.0);
            Console.WriteLine($"linear {rows,3} x {inF} -> {outF}, {name,-24}: {sec * 1e3,8:F2} ms, {2.0 * rows * inF * outF / sec / 1e9,6:F1} GFLOP/s, weights read {(double)inF * outF * (dt == ScalarType.BFloat16 ? 2 : 4) / sec / 1e9,5:F1} GB/s");
        }
    return 0;
}

// The machine's limits at each thread count, measured before the model is loaded (the products only where an MFU needs them).
var limits = new Dictionary<int, (double Gemm32, double Gemm16, double Bandwidth)>();
foreach (int n in threadCounts.Distinct())
{
    set_num_threads(n);
    bool products = prompts.Length > 0 || scoreTokens > 0;
    var l = (Gemm32: products ? GemmRate(ScalarType.Float32) : double.NaN, Gemm16: products ? GemmRate(ScalarType.BFloat16) : double.NaN, Bandwidth: Bandwidth());
    limits[n] = l;
    Console.WriteLine($"hardware at {n} thread(s): matrix product " + (products ? $"{l.Gemm32:F1} GFLOP/s float32, {l.Gemm16:F1} GFLOP/s bfloat16 (256x2048 through 2048->5632, fastest of ~2 s)" : "not measured (no prefill or scoring)") + "; " +
                      $"memory read bandwidth {l.Bandwidth:F1} GB/s (the faster of libtorch's sum and a vector sum on {n} worker(s), over 1 GiB, fastest of 4)");
}

var summary = new List<(string Mode, int Threads, string Measurement, string Figure, double Ratio, string Bound)>();
var decodeRates = new Dictionary<(string Mode, int Threads, int Batch), double>();   // full depth, for the bfloat16 / float32 bar
var ceilings = new Dictionary<(string Mode, int Threads, string Measurement), string>();
var bufferBounds = new List<(string Mode, int Threads, int Batch, string Name, double Bandwidth)>();   // the 1 GiB bound beside each decode figure   // batch > 1: what the multiply-adds allow
double? prefill512Over = null;                                                        // float32 512-token prefill: peak − weights, GiB
foreach (var mode in modes)
{
    var dtype = mode == "float32" ? ScalarType.Float32 : ScalarType.BFloat16;
    var compute = mode switch { "bfloat16-native" => BFloat16Compute.Native, "bfloat16-f32" => BFloat16Compute.Float32, _ => BFloat16Compute.Auto };
    int elt = dtype == ScalarType.BFloat16 ? 2 : 4;
    Console.WriteLine($"\n== {mode}");
    set_num_threads(threadCounts[0]);

    var clock = Stopwatch.StartNew();
    OuroForCausalLM lm;
    if (checkpoint is not null)
    {
        // The time to read the weight files (page cache warmed by a first read): what a load can at best approach.
        var files = Directory.GetFiles(checkpoint, "*.safetensors");
        ReadAll(files);
        clock.Restart();
        long bytes = ReadAll(files);
        double read = clock.Elapsed.TotalSeconds;
        clock.Restart();
        ReadAll(files, freshMemory: true);
        double fresh = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"read the weight files: {read:F1} s for {bytes / 1e9:F2} GB ({bytes / 1e9 / read:F1} GB/s, page cache warm, one reused buffer); " +
                          $"{fresh:F1} s into newly allocated memory, as a load must");
        ResetPeak();
        clock.Restart();
        lm = OuroCheckpoint.Load(checkpoint, new OuroLoadOptions { DType = dtype, BFloat16Compute = compute }).DetachModel();
    }
    else
    {
        var config = OuroConfig.Ouro1_4B();
        if (layers is int nl) config.NumHiddenLayers = nl;
        ResetPeak();
        clock.Restart();
        using var g = new Generator(1);
        lm = new OuroForCausalLM(config, null, dtype, g) { BFloat16Compute = compute };
    }
    lm.eval();
    if (Arg("--save") is { } save)
    {
        // Writes the model as a LoopRpt model directory (to measure loading a real file with --checkpoint), then stops.
        LoopRpt.Checkpoints.ModelDirectory.Save(save, lm, new LoopRpt.Checkpoints.ModelMeta());
        Console.WriteLine($"saved to {save}");
        return 0;
    }
    var c = lm.Config;
    Console.WriteLine($"load: {clock.Elapsed.TotalSeconds:F1} s ({(checkpoint is null ? "random weights drawn" : checkpoint)}), peak RSS {PeakGiB():F2} GiB; " +
                      $"compute: {lm.EffectiveBFloat16Compute} for {lm.DType} weights -> activations in {lm.ComputeType}");
    long vocabParams = (long)c.VocabSize * c.HiddenSize;
    long allParams = lm.parameters().Sum(p => p.numel());
    long layerParams = allParams - vocabParams * (c.TieWordEmbeddings ? 1 : 2);   // per loop: the layers' weights (norms, gate included)
    double weightsGiB = allParams * (double)elt / (1L << 30);
    Console.WriteLine($"model: {c.NumHiddenLayers} layers x {c.TotalUtSteps} loops, hidden {c.HiddenSize}, vocab {c.VocabSize}, {allParams / 1e9:F3} B parameters = {weightsGiB:F2} GiB");
    var rng = new Random(5);
    long[] Ids(int n) => Enumerable.Range(0, n).Select(_ => (long)rng.Next(c.VocabSize)).ToArray();
    double Flops(double tokens, double loops) => 2 * tokens * (layerParams * loops + vocabParams);   // matrix products only
    var gen = new LoopedGenerator(lm);

    foreach (int threads in threadCounts)
    {
        set_num_threads(threads);
        var (gemm32, gemm16, bandwidth) = limits[threads];
        double gemm = lm.ComputeType == ScalarType.BFloat16 ? gemm16 : gemm32;     // the rate of the products this mode runs
        string at = $"[{mode}, {threads} thread(s)]";
        if (threadCounts.Length > 1) Console.WriteLine($"-- {threads} torch thread(s)");
        void Record(string measurement, string figure, double ratio, string bound) => summary.Add((mode, threads, measurement, figure, ratio, bound));

        foreach (int n in prompts)
        {
            var prompt = Ids(n);
            ResetPeak();
            clock.Restart();
            var prefillProfile = profile ? InferenceProfile.Begin() : null;
            gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 1, Exit = ExitMode.Last });
            prefillProfile?.Dispose();
            double s = clock.Elapsed.TotalSeconds, over = PeakGiB() - weightsGiB;
            double mfu = Flops(n, c.TotalUtSteps) / s / 1e9 / gemm;
            Console.WriteLine($"{at} prefill {n,4} tokens: {s:F2} s, {n / s:F1} tokens/s, MFU {mfu:P0} of the {lm.ComputeType} rate, " +
                              $"peak RSS {PeakGiB():F2} GiB (weights + {over:F2})");
            Record($"prefill {n} tokens", $"{n / s:F1} tokens/s, peak weights + {over:F2} GiB", mfu, $"{lm.ComputeType} product rate {gemm:F0} GFLOP/s");
            if (n == 512 && mode == "float32") prefill512Over = Math.Max(prefill512Over ?? 0, over);
            if (prefillProfile is not null) Console.Write($"profile of the {n}-token prefill:\n{prefillProfile.ToMarkdown()}");
        }

        foreach (int batch in decodeBatches)
            foreach (var (name, exit) in new[] { ("full depth", ExitMode.Last), ($"q = {q}", ExitMode.Q(q)) })
            {
                var batchPrompts = Enumerable.Range(0, batch).Select(_ => (IReadOnlyList<long>)Ids(decodePrompt)).ToList();
                var prefillOnly = profile ? InferenceProfile.Begin() : null;
                if (profile) gen.GenerateBatch(batchPrompts, new GenerationOptions { MaxNewTokens = 1, Exit = exit, BatchSize = batch, Temperature = 0, StopTokens = [] });
                prefillOnly?.Dispose();
                // A short decode per kernel mode first: the decode products' calibration (DecodeKernelPolicy) runs in its first steps.
                foreach (var k in kernels)
                {
                    DecodeKernelPolicy.Mode = k;
                    gen.GenerateBatch(batchPrompts, new GenerationOptions { MaxNewTokens = 3, Exit = exit, BatchSize = batch, Temperature = 0, StopTokens = [] });
                }
                // The kernel modes take turns, --decode-repeats times each; each keeps its fastest run (a shared machine's
                // load moves between runs, so modes are compared within one run, interleaved).
                var best = new Dictionary<DecodeKernel, (double Seconds, double MeanLoops, double Peak)>();
                InferenceProfile? decodeProfile = null;
                // The read bound of this measurement: how fast this machine reads the very bytes decoding reads (every
                // weight of the loaded model), measured just before it and just after it, the higher of the two: a shared
                // machine's bandwidth moves by tens of percent from one minute to the next, and the bound must not be low.
                // A fresh 1 GiB buffer (the run's first bound) reads faster than the model's long-lived gigabytes on this
                // VM (docs/benchmarks.md, "Which bandwidth bounds decoding"), so it is printed beside it, not used.
                double weightsBefore = WeightsBandwidth(lm), bufferBefore = Bandwidth(quiet: true);
                for (int rep = 0; rep < decodeRepeats; rep++)
                    foreach (var k in kernels)
                    {
                        DecodeKernelPolicy.Mode = k;
                        // The decode time runs from the moment every row has its first token (the prefill's) to the last token.
                        int seen = 0;
                        double firstRound = 0;
                        ResetPeak();
                        clock.Restart();
                        decodeProfile = profile && rep == 0 && k == kernels[^1] ? InferenceProfile.Begin() : null;
                        var r = gen.GenerateBatch(batchPrompts, new GenerationOptions
                        {
                            MaxNewTokens = 1 + decodeTokens, Exit = exit, BatchSize = batch, Temperature = 0, StopTokens = [],
                            OnToken = (_, _, _) => { if (++seen == batch) firstRound = clock.Elapsed.TotalSeconds; },
                        });
                        decodeProfile?.Dispose();
                        double s = clock.Elapsed.TotalSeconds - firstRound;
                        double meanLoops = r.SelectMany(x => x.LoopsUsed.Skip(1)).DefaultIfEmpty(c.TotalUtSteps).Average();
                        if (!best.TryGetValue(k, out var b) || s < b.Seconds) best[k] = (s, meanLoops, PeakGiB());
                    }
                DecodeKernelPolicy.Mode = kernels[^1];
                double weightsAfter = WeightsBandwidth(lm), bufferAfter = Bandwidth(quiet: true), decodeBandwidth = Math.Max(weightsBefore, weightsAfter);
                Console.WriteLine($"{at} read bandwidth around the decode measurement: the model's weights {weightsBefore:F1} GB/s before, {weightsAfter:F1} after " +
                                  $"(the bound uses {decodeBandwidth:F1}); a fresh 1 GiB buffer {bufferBefore:F1} / {bufferAfter:F1}; the run's first {bandwidth:F1}");
                double tokens = (double)batch * decodeTokens, baseline = tokens / best[kernels[0]].Seconds;
                foreach (var k in kernels)
                {
                    var (s, meanLoops, peak) = best[k];
                    // One decoding step reads the layers' weights once per loop run and the LM head once, for all rows together.
                    double bytesPerStep = (layerParams * meanLoops + vocabParams) * elt;
                    double bound = batch * decodeBandwidth * 1e9 / bytesPerStep, bufferBound = batch * Math.Max(bufferBefore, bufferAfter) * 1e9 / bytesPerStep;
                    string kernel = kernels.Length > 1 ? $", decode kernel {k}" : "";
                    Console.WriteLine($"{at} decode batch {batch}, {name}{kernel}: {tokens / s:F2} tokens/s ({s / decodeTokens:F2} s per step), mean loops {meanLoops:F2}, " +
                                      $"bandwidth bound {bound:F2} tokens/s -> {tokens / s / bound:P0} of it ({tokens / s / bufferBound:P0} of a 1 GiB buffer's), peak RSS {peak:F2} GiB" +
                                      (k == kernels[0] ? "" : $"; {tokens / s / baseline:F2}x decode kernel {kernels[0]}"));
                    Record($"decode batch {batch}, {name}{kernel}", $"{tokens / s:F2} tokens/s (mean loops {meanLoops:F2})", tokens / s / bound, $"read bound {bound:F2} tokens/s at {decodeBandwidth:F1} GB/s");
                    if (name == "full depth" && k == kernels[^1]) decodeRates[(mode, threads, batch)] = tokens / s;
                    // Each weight read feeds `batch` multiply-adds: at the measured product rates the arithmetic alone allows
                    // rate × bytes per weight / (2 × batch × bandwidth) of the read bound (float32 multiply-adds: the own
                    // kernel's; bfloat16 ones: libtorch's BF16 dot products).
                    if (batch > 1 && !double.IsNaN(gemm32))
                        ceilings[(mode, threads, $"decode batch {batch}, {name}{kernel}")] =
                            $"float32 multiply-adds at {gemm32:F0} GFLOP/s allow {gemm32 * elt / (2.0 * batch * decodeBandwidth):P0}" +
                            (elt == 2 ? $", bfloat16 dot products at {gemm16:F0} GFLOP/s {gemm16 * elt / (2.0 * batch * decodeBandwidth):P0}" : "");
                }
                if (decodeProfile is not null && prefillOnly is not null)
                    Console.Write($"profile of one decoding step (the {decodeTokens}-token run minus the prompt-only run, per step, decode kernel {kernels[^1]}):\n{StepProfile(decodeProfile, prefillOnly, decodeTokens)}");
            }

        if (scoreTokens > 0)
            foreach (var (name, exit) in new[] { ("q = 1", ExitMode.Q(1.0)), ($"q = {q}", ExitMode.Q(q)) })
            {
                using var scope = NewDisposeScope();
                var ids = tensor(Ids(scoreTokens), [1, scoreTokens]);
                var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = exit });
                ResetPeak();
                clock.Restart();
                using var score = scorer.Score(ids);
                double s = clock.Elapsed.TotalSeconds;
                double meanLoops = score.MeanExitStep, mfu = Flops(scoreTokens, meanLoops) / s / 1e9 / gemm;
                Console.WriteLine($"{at} score {scoreTokens} tokens, {name}: {s:F2} s, {scoreTokens / s:F1} tokens/s, mean loops {meanLoops:F2}, " +
                                  $"MFU {mfu:P0}, peak RSS {PeakGiB():F2} GiB (weights {weightsGiB:F2} GiB)");
                Record($"score {scoreTokens} tokens, {name}", $"{scoreTokens / s:F1} tokens/s (mean loops {meanLoops:F2})", mfu, $"{lm.ComputeType} product rate {gemm:F0} GFLOP/s");
            }
    }
    lm.Dispose();
}

// One table with every figure as a ratio of its bound, then the bars of issue 28.
Console.WriteLine($"\n## Summary (cpu: {Environment.ProcessorCount} logical cores, {cpu})\n");
Console.WriteLine("| dtype | threads | measurement | figure | of its bound | bound |\n|---|---:|---|---|---:|---|");
foreach (var x in summary)
    Console.WriteLine($"| {x.Mode} | {x.Threads} | {x.Measurement} | {x.Figure} | {x.Ratio:P0} | {x.Bound} |");
Console.WriteLine("\nDecode products, as calibrated in this run (the fastest call of each candidate):");
foreach (var choice in DecodeKernelPolicy.Choices.OrderBy(ch => ch.Product, StringComparer.Ordinal)) Console.WriteLine($"- {choice}");
Console.WriteLine("\nBars of issue 28:");
// The decode bars are judged on the last --decode-kernel mode (auto by default).
foreach (var x in summary.Where(x => x.Measurement.StartsWith("decode batch ") && x.Measurement.Contains("full depth")
                                     && (kernels.Length == 1 || x.Measurement.EndsWith($"decode kernel {kernels[^1]}"))))
{
    double bar = x.Measurement.StartsWith("decode batch 1,") ? 0.70 : 0.50;
    Console.WriteLine($"- {x.Mode}, {x.Threads} thread(s), {x.Measurement}: {x.Ratio:P0} of the read bound (bar {bar:P0}): {(x.Ratio >= bar ? "met" : "NOT met")}" +
                      (ceilings.TryGetValue((x.Mode, x.Threads, x.Measurement), out var ceiling) ? $" (arithmetic ceiling: {ceiling} of the read bound)" : ""));
}
foreach (var ((mode, threads, batch), rate) in decodeRates.Where(k => k.Key.Mode != "float32"))
    if (decodeRates.TryGetValue(("float32", threads, batch), out var f32))
    {
        double bar = cpu.Avx512BF16 ? 1.5 : 1.0;
        Console.WriteLine($"- {mode} / float32 decode, batch {batch}, {threads} thread(s): {rate / f32:F2}x (bar {bar:F1}x on this CPU{(cpu.Avx512BF16 ? ", avx512_bf16" : "")}): {(rate / f32 >= bar ? "met" : "NOT met")}");
    }
if (prefill512Over is double over512)
    Console.WriteLine($"- float32 512-token prefill peak: weights + {over512:F2} GiB (bar + 1.5 GiB): {(over512 <= 1.5 ? "met" : "NOT met")}");
return 0;

static string FewRowsKernelInfo() => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "Vector512 (AVX-512) in hardware"
    : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "Vector256 (AVX2) in hardware, Vector512 emulated" : "emulated";

// The fastest of repeated calls over about `seconds` (at least 3, after one warm-up): on a shared machine the minimum is the least disturbed.
static double Fastest(Action call, double seconds)
{
    call();
    var total = Stopwatch.StartNew();
    double best = double.MaxValue;
    for (int reps = 0; total.Elapsed.TotalSeconds < seconds || reps < 3; reps++)
    {
        var one = Stopwatch.StartNew();
        call();
        best = Math.Min(best, one.Elapsed.TotalSeconds);
    }
    return best;
}
// Per-section time of `all` minus `baseline`, divided by `steps`: where one decoding step's time goes.
static string StepProfile(InferenceProfile all, InferenceProfile baseline, int steps)
{
    var before = baseline.Sections.ToDictionary(x => x.Name);
    var rows = all.Sections.Select(x => (x.Name, Ms: (x.Time - (before.TryGetValue(x.Name, out var b) ? b.Time : TimeSpan.Zero)).TotalMilliseconds / steps,
        Calls: (x.Calls - (before.TryGetValue(x.Name, out var bc) ? bc.Calls : 0)) / (double)steps)).ToList();
    double total = (all.Elapsed - baseline.Elapsed).TotalMilliseconds / steps;
    var sb = new System.Text.StringBuilder("| section | ms per step | share | calls per step |\n|---|---:|---:|---:|\n");
    foreach (var x in rows.OrderByDescending(x => x.Ms))
        sb.Append(CultureInfo.InvariantCulture, $"| {x.Name} | {x.Ms:F1} | {100 * x.Ms / total:F1} % | {x.Calls:F1} |\n");
    return sb.Append(CultureInfo.InvariantCulture, $"| total | {total:F1} | 100 % | |\n").ToString();
}

static long ReadAll(string[] files, bool freshMemory = false)
{
    // freshMemory: each 256 MB goes into a newly allocated tensor (first-touch page faults included), freed afterwards.
    var buffer = new byte[1 << 24];
    long total = 0;
    foreach (var f in files)
    {
        using var s = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        if (freshMemory)
            for (long left = s.Length; left > 0;)
            {
                long n = Math.Min(left, 1L << 28);
                using var t = empty(n, ScalarType.Byte);
                s.ReadExactly(t.bytes);
                total += n;
                left -= n;
            }
        else
        {
            int n;
            while ((n = s.Read(buffer, 0, buffer.Length)) > 0) total += n;
        }
    }
    return total;
}

static double GemmRate(ScalarType dtype)
{
    // The model's product shape: 256 rows through a 2048 -> 5632 projection (x Wᵀ, as F.linear), fastest of ~2 s.
    using var scope = NewDisposeScope();
    using var noGrad = no_grad();
    using var g = new Generator(3);
    var x = randn([256, 2048], generator: g).to(dtype);
    var w = randn([5632, 2048], generator: g).to(dtype);
    return 2.0 * 256 * 2048 * 5632 / Fastest(() => TorchSharp.torch.nn.functional.linear(x, w).Dispose(), 2.0) / 1e9;
}

static double Bandwidth(bool quiet = false)
{
    double torchSum = TorchSumBandwidth(), vectorSum = StreamBandwidth(get_num_threads());
    if (!quiet) Console.WriteLine($"read bandwidth at {get_num_threads()} thread(s): libtorch sum {torchSum:F1} GB/s, vector sum {vectorSum:F1} GB/s (1 GiB, fastest of 4); the bound uses the higher");
    return Math.Max(torchSum, vectorSum);
}

// Read bandwidth over the model's own weights: every parameter read once by 256-bit loads on as many
// workers as torch threads, each tensor split between them, prefetching 4 KiB ahead; for float32 weights also libtorch's
// sum over each; fastest pass of 3, the higher reader. These are the bytes, pages and sizes a decoding step reads.
static unsafe double WeightsBandwidth(OuroForCausalLM lm)
{
    using var scope = NewDisposeScope();
    var tensors = lm.parameters().Select(p => p.detach()).Where(t => t.is_contiguous()).ToList();
    long bytes = tensors.Sum(t => t.numel() * t.element_size());
    int threads = Math.Max(1, get_num_threads());
    var parts = tensors.Select(t => (Ptr: (nint)THSTensor_data(t.Handle), Bytes: t.numel() * t.element_size())).ToArray();
    float sink = 0;
    void Read(nint start, long length)
    {
        byte* q = (byte*)start;
        long n = length / 256 * 256;
        var a = System.Runtime.Intrinsics.Vector256<uint>.Zero;
        var b = a;
        var c = a;
        var d = a;
        for (long i = 0; i < n; i += 256)
        {
            if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
            {
                System.Runtime.Intrinsics.X86.Sse.Prefetch1(q + i + 4096);
                System.Runtime.Intrinsics.X86.Sse.Prefetch1(q + i + 4096 + 64);
                System.Runtime.Intrinsics.X86.Sse.Prefetch1(q + i + 4096 + 128);
                System.Runtime.Intrinsics.X86.Sse.Prefetch1(q + i + 4096 + 192);
            }
            a += System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i)) + System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 32));
            b += System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 64)) + System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 96));
            c += System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 128)) + System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 160));
            d += System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 192)) + System.Runtime.Intrinsics.Vector256.Load((uint*)(q + i + 224));
        }
        sink += System.Runtime.Intrinsics.Vector256.Sum(a + b + c + d);
    }
    void Pass()
    {
        foreach (var (ptr, length) in parts)
        {
            long per = (length / threads + 255) / 256 * 256;
            if (threads == 1 || length < 1 << 20) Read(ptr, length);
            else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads },
                              k => { long from = k * per; if (from < length) Read(ptr + (nint)from, Math.Min(per, length - from)); });
        }
    }
    double best = double.MaxValue;
    for (int r = 0; r < 3; r++)
    {
        long t0 = Stopwatch.GetTimestamp();
        Pass();
        best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalSeconds);
    }
    double rate = bytes / best / 1e9 + sink * 0;
    if (tensors.All(t => t.dtype == ScalarType.Float32))
    {
        double torchBest = double.MaxValue;
        for (int r = 0; r < 3; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            foreach (var t in tensors) t.sum().Dispose();
            torchBest = Math.Min(torchBest, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        rate = Math.Max(rate, bytes / torchBest / 1e9);
    }
    return rate;
}

[System.Runtime.InteropServices.DllImport("LibTorchSharp")]
static extern IntPtr THSTensor_data(IntPtr handle);

static double TorchSumBandwidth()
{
    // Read bandwidth (what decoding needs: every weight read once per use): libtorch's sum over 1 GiB of float32, fastest of 4.
    using var scope = NewDisposeScope();
    var src = ones(1L << 28);
    src.sum().Dispose();
    return (1L << 30) / Fastest(() => src.sum().Dispose(), 0) / 1e9;
}

static unsafe double StreamBandwidth(int threads)
{
    // The same read by `threads` workers, each summing its contiguous share of 1 GiB with 512-bit vectors and four
    // accumulators, fastest of 4: libtorch's sum can fall short of what the memory delivers (the bound must not be low).
    const long bytes = 1L << 30;
    float* p = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)bytes, 64);
    try
    {
        new Span<byte>(p, (int)bytes).Fill(0);
        long per = bytes / sizeof(float) / threads / 64 * 64;
        nint start = (nint)p;
        float sink = 0;
        void Part(int t)
        {
            var q = (float*)start + t * per;
            System.Runtime.Intrinsics.Vector512<float> a = default, b = default, c = default, d = default;
            for (long i = 0; i < per; i += 64)
            {
                a += System.Runtime.Intrinsics.Vector512.Load(q + i);
                b += System.Runtime.Intrinsics.Vector512.Load(q + i + 16);
                c += System.Runtime.Intrinsics.Vector512.Load(q + i + 32);
                d += System.Runtime.Intrinsics.Vector512.Load(q + i + 48);
            }
            sink += System.Runtime.Intrinsics.Vector512.Sum(a + b + c + d);
        }
        double best = Fastest(() => Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, Part), 0);
        return per * threads * sizeof(float) / best / 1e9 + sink * 0;
    }
    finally
    {
        System.Runtime.InteropServices.NativeMemory.AlignedFree(p);
    }
}

// The kernel's peak-RSS counter (VmHWM) is reset by writing 5 to clear_refs (Linux).
static void ResetPeak() { try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { } }

static double PeakGiB()
{
    var line = File.Exists("/proc/self/status") ? File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:")) : null;
    return line is null ? double.NaN : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / (1024.0 * 1024);
}
