// Real-size inference benchmark (issue 20): the Ouro-1.4B shape on this machine's CPU, with the hardware's own limits
// measured in the same run. No download: random weights unless --checkpoint DIR names an Ouro/LoopRpt model directory.
//
//   dotnet run -c Release --project examples/RealSizeBenchmark -- [--checkpoint DIR] [--modes float32,bfloat16,bfloat16-native]
//       [--prompts 16,128,512] [--score-tokens 128] [--decode-tokens 8] [--decode-batches 1,8] [--q 0.5] [--threads N]
//       [--layers N (smoke runs)] [--save DIR (write the random model as a model directory and stop)]
//       [--profile (tables of where the time goes: per prefill, and per decoding step)]
//
// Modes: float32; bfloat16 (bfloat16 weights, the automatic compute policy: float32 compute on CPUs without AVX-512
// BF16); bfloat16-native and bfloat16-f32 (the policy forced). Prints, per mode: the matrix-product rate of float32 and
// bfloat16 and the memory read bandwidth; load time (and, with --checkpoint, the time to read the files) and peak RSS;
// prefill tokens/s and MFU per prompt length; decode tokens/s per batch size at full depth and with Q-exit, against
// the memory-bandwidth bound; scoring tokens/s, MFU and peak RSS. Peak RSS is the kernel's high-water mark, reset
// before each measurement.
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
int[] Ints(string name, int[] d)
{
    var s = Arg(name);
    if (s is null) return d;
    var values = s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => int.TryParse(v, out var n) && n >= 0 ? n : throw new ArgumentException($"{name}: '{v}' is not a non-negative integer.")).ToArray();
    return values;
}
var checkpoint = Arg("--checkpoint");
var modes = (Arg("--modes") ?? Arg("--dtypes") ?? "float32,bfloat16").Split(',', StringSplitOptions.RemoveEmptyEntries);
var prompts = Ints("--prompts", [16, 128, 512]);
var decodeBatches = Ints("--decode-batches", [1, 8]);
int scoreTokens = Ints("--score-tokens", [128])[0], decodeTokens = Ints("--decode-tokens", [8])[0];
double q = double.Parse(Arg("--q") ?? "0.5");
bool profile = args.Contains("--profile");     // print where the time goes in each prefill and decoding step
if (!(q is >= 0 and <= 1)) throw new ArgumentOutOfRangeException("--q", q, "--q must lie in [0, 1].");
foreach (var m in modes)
    if (m is not ("float32" or "bfloat16" or "bfloat16-native" or "bfloat16-f32"))
        throw new ArgumentException($"--modes: '{m}' is not one of float32, bfloat16, bfloat16-native, bfloat16-f32.");
if (checkpoint is not null && !Directory.Exists(checkpoint)) throw new DirectoryNotFoundException($"--checkpoint '{checkpoint}' does not exist.");
TorchNative.EnsureLoaded();
if (Arg("--threads") is { } t) set_num_threads(int.Parse(t));
var cpu = CpuFeatures.Current;
Console.WriteLine($"cpu: {Environment.ProcessorCount} logical cores, torch threads {get_num_threads()}, features: {cpu}; " +
                  $"bfloat16 auto policy here: {BFloat16ComputePolicy.Resolve(BFloat16Compute.Auto, cpu)}");

double bandwidth = Bandwidth();
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
            layer.forward(x).Dispose();
            // The fastest of the calls in about a second: on a shared machine the minimum is the least disturbed.
            var total = Stopwatch.StartNew();
            double sec = double.MaxValue;
            for (int reps = 0; total.Elapsed.TotalSeconds < 1 || reps < 3; reps++)
            {
                var one = Stopwatch.StartNew();
                layer.forward(x).Dispose();
                sec = Math.Min(sec, one.Elapsed.TotalSeconds);
            }
            Console.WriteLine($"linear {rows,3} x {inF} -> {outF}, {name,-24}: {sec * 1e3,8:F2} ms, {2.0 * rows * inF * outF / sec / 1e9,6:F1} GFLOP/s, weights read {(double)inF * outF * (dt == ScalarType.BFloat16 ? 2 : 4) / sec / 1e9,5:F1} GB/s");
        }
    return;
}
double gemm32 = GemmRate(ScalarType.Float32), gemm16 = GemmRate(ScalarType.BFloat16);
Console.WriteLine($"hardware: matrix product {gemm32:F1} GFLOP/s float32, {gemm16:F1} GFLOP/s bfloat16 (256x2048 through 2048->5632, fastest of ~2 s); " +
                  $"memory read bandwidth {bandwidth:F1} GB/s (sum over 1 GiB)");

foreach (var mode in modes)
{
    var dtype = mode == "float32" ? ScalarType.Float32 : ScalarType.BFloat16;
    var compute = mode switch { "bfloat16-native" => BFloat16Compute.Native, "bfloat16-f32" => BFloat16Compute.Float32, _ => BFloat16Compute.Auto };
    int elt = dtype == ScalarType.BFloat16 ? 2 : 4;
    Console.WriteLine($"\n== {mode}");

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
        if (Arg("--layers") is { } l) config.NumHiddenLayers = int.Parse(l);
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
        return;
    }
    var c = lm.Config;
    double gemm = lm.ComputeType == ScalarType.BFloat16 ? gemm16 : gemm32;     // the rate of the products this mode runs
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

    foreach (int n in prompts)
    {
        var prompt = Ids(n);
        ResetPeak();
        clock.Restart();
        var prefillProfile = profile ? InferenceProfile.Begin() : null;
        gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 1, Exit = ExitMode.Last });
        prefillProfile?.Dispose();
        double s = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"prefill {n,4} tokens: {s:F2} s, {n / s:F1} tokens/s, MFU {Flops(n, c.TotalUtSteps) / s / 1e9 / gemm:P0} of the {lm.ComputeType} rate, " +
                          $"peak RSS {PeakGiB():F2} GiB (weights + {PeakGiB() - weightsGiB:F2})");
        if (prefillProfile is not null) Console.Write($"profile of the {n}-token prefill:\n{prefillProfile.ToMarkdown()}");
    }

    foreach (int batch in decodeBatches.Where(b => b > 0))
        foreach (var (name, exit) in new[] { ("full depth", ExitMode.Last), ($"q = {q}", ExitMode.Q(q)) })
        {
            var batchPrompts = Enumerable.Range(0, batch).Select(_ => (IReadOnlyList<long>)Ids(16)).ToList();
            var options = new GenerationOptions { MaxNewTokens = 1, Exit = exit, BatchSize = batch, Temperature = 0, StopTokens = [] };
            clock.Restart();
            var prefillOnly = profile ? InferenceProfile.Begin() : null;
            gen.GenerateBatch(batchPrompts, options);
            prefillOnly?.Dispose();
            double prefill = clock.Elapsed.TotalSeconds;
            ResetPeak();
            clock.Restart();
            var decodeProfile = profile ? InferenceProfile.Begin() : null;
            var r = gen.GenerateBatch(batchPrompts, new GenerationOptions { MaxNewTokens = 1 + decodeTokens, Exit = exit, BatchSize = batch, Temperature = 0, StopTokens = [] });
            decodeProfile?.Dispose();
            double s = clock.Elapsed.TotalSeconds - prefill;
            double tokens = (double)batch * decodeTokens;
            double meanLoops = r.SelectMany(x => x.LoopsUsed.Skip(1)).DefaultIfEmpty(c.TotalUtSteps).Average();
            // One decoding step reads the layers' weights once per loop run and the LM head once, for all rows together.
            double bytesPerStep = (layerParams * meanLoops + vocabParams) * elt;
            double bound = batch * bandwidth * 1e9 / bytesPerStep;
            Console.WriteLine($"decode batch {batch}, {name}: {tokens / s:F2} tokens/s ({s / decodeTokens:F2} s per step), mean loops {meanLoops:F2}, " +
                              $"bandwidth bound {bound:F2} tokens/s -> {tokens / s / bound:P0} of it, peak RSS {PeakGiB():F2} GiB");
            if (decodeProfile is not null && prefillOnly is not null)
                Console.Write($"profile of one decoding step (the {decodeTokens}-token run minus the prompt-only run, per step):\n{StepProfile(decodeProfile, prefillOnly, decodeTokens)}");
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
            double meanLoops = score.MeanExitStep;
            Console.WriteLine($"score {scoreTokens} tokens, {name}: {s:F2} s, {scoreTokens / s:F1} tokens/s, mean loops {meanLoops:F2}, " +
                              $"MFU {Flops(scoreTokens, meanLoops) / s / 1e9 / gemm:P0}, peak RSS {PeakGiB():F2} GiB (weights {weightsGiB:F2} GiB)");
        }
    lm.Dispose();
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
    TorchSharp.torch.nn.functional.linear(x, w).Dispose();
    var total = Stopwatch.StartNew();
    double best = double.MaxValue;
    for (int reps = 0; total.Elapsed.TotalSeconds < 2 || reps < 2; reps++)
    {
        var one = Stopwatch.StartNew();
        TorchSharp.torch.nn.functional.linear(x, w).Dispose();
        best = Math.Min(best, one.Elapsed.TotalSeconds);
    }
    return 2.0 * 256 * 2048 * 5632 / best / 1e9;
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
