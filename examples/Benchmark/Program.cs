// Training-throughput benchmark (issue 2): trains the fixed small config with the library's trainer and prints
// tokens/s, model FLOPs per token, achieved FLOP/s and model-FLOPs utilization against a large matrix product of the
// same dtype measured in the same run, plus peak memory. Usage:
//   dotnet run -c Release --project examples/Benchmark -- [--steps 30] [--steps-per-round 5] [--batch 16] [--seq 128]
//       [--dtypes float32,bfloat16] [--no-minimal]
// LoopRPT step cost against Stage I (seconds per step, ratio, peak RSS; see LoopRptCost.cs for its options):
//   dotnet run -c Release --project examples/Benchmark -- looprpt [--hidden 128 --layers 2 --loops 4 --vocab 2048 --batch 16 --seq 128 --rollouts 8]
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Objectives;
using LoopRpt.Training;
using static TorchSharp.torch;

if (args.Length > 0 && args[0] == "looprpt")
{
    TorchNative.EnsureLoaded();
    Environment.ExitCode = LoopRptCost.Run(args[1..]);
    return;
}

Args opts;
try
{
    opts = Args.Parse(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Environment.ExitCode = 2;
    return;
}
if (opts.Help)
{
    Console.WriteLine(Args.Usage);
    return;
}
TorchNative.EnsureLoaded();
Console.WriteLine($"# LoopRpt training benchmark");
Console.WriteLine($"threads={get_num_threads()} steps={opts.Steps} batch={opts.Batch} seq={opts.Seq} processors={Environment.ProcessorCount}");
Console.WriteLine($"libtorch's OpenMP spinning: {TorchNative.OpenMpSpinning}");
Console.WriteLine($"huge pages: {LoopRpt.Model.HugePages.Description}");
var config = OuroConfig.Small();
Console.WriteLine($"config: hidden {config.HiddenSize}, layers {config.NumHiddenLayers}, loops {config.TotalUtSteps}, vocab {config.VocabSize}, params {config.ParameterCount():N0}");
double flopsPerToken = config.TrainingFlopsPerToken(opts.Seq);
Console.WriteLine($"model FLOPs per token (fwd+bwd, matmuls, LM head at every loop): {flopsPerToken / 1e6:F2} MFLOP");
Console.WriteLine();
Console.WriteLine("Rounds interleave matrix-product bursts with training bursts so that both see the same machine load;");
Console.WriteLine("MFU = achieved model FLOP/s ÷ matrix-product FLOP/s of the same dtype. 'minimal' is a hand-written loop");
Console.WriteLine("(same model, plain Stage I loss, TorchSharp's own AdamW, no metrics): library ÷ minimal shows the cost of the abstractions.");
Console.WriteLine();
Console.WriteLine("| dtype | loop | tokens/s | achieved GFLOP/s | matmul 2048² GFLOP/s | MFU vs matmul | ms/step | peak RSS MB |");
Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|");

var rng = new Random(1);
var tokens = Enumerable.Range(0, 200_000).Select(_ => rng.Next(config.VocabSize)).ToArray();
var stepMs = new Dictionary<ScalarType, double>();   // the library's ms per step, for --products
foreach (var dtype in opts.DTypes)
{
    Memory.ResetPeak();
    using var g = new Generator(1);
    using var lm = new OuroForCausalLM(config, dtype: dtype, generator: g);
    var source = new PackedTokenSource(tokens, opts.Batch, opts.Seq, seed: 1);
    var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1_000_000 });
    using var minimal = new MinimalLoop(lm, source);
    trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), 2)]);   // warm-up
    minimal.Run(2);
    double libSeconds = 0, minSeconds = 0, matmulFlops = 0, matmulSeconds = 0;
    int rounds = Math.Max(1, opts.Steps / opts.StepsPerRound);
    for (int r = 0; r < rounds; r++)
    {
        var (f, s) = Matmul(dtype); matmulFlops += f; matmulSeconds += s;
        var clock = Stopwatch.StartNew();
        trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), opts.StepsPerRound)]);
        libSeconds += clock.Elapsed.TotalSeconds;
        (f, s) = Matmul(dtype); matmulFlops += f; matmulSeconds += s;
        if (!opts.SkipMinimal)
        {
            clock.Restart();
            minimal.Run(opts.StepsPerRound);
            minSeconds += clock.Elapsed.TotalSeconds;
        }
    }
    double matmul = matmulFlops / matmulSeconds / 1e9;
    long steps = (long)rounds * opts.StepsPerRound;
    string name = dtype == ScalarType.BFloat16 ? "bfloat16" : "float32";
    double libTok = 0;
    foreach (var (loop, seconds) in new[] { ("library", libSeconds), ("minimal", minSeconds) })
    {
        if (seconds <= 0) continue;
        double tokPerSec = steps * opts.Batch * opts.Seq / seconds;
        if (loop == "library") { libTok = tokPerSec; stepMs[dtype] = seconds * 1000 / steps; }
        double achieved = tokPerSec * flopsPerToken / 1e9;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {name} | {loop} | {tokPerSec:F0} | {achieved:F1} | {matmul:F1} | {achieved / matmul:P1} | {seconds * 1000 / steps:F0} | {Memory.PeakRssMb():F0} |"));
    }
    if (minSeconds > 0)
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | library ÷ minimal | {libTok / (steps * opts.Batch * opts.Seq / minSeconds):P1} | | | | | |"));
}

if (opts.Products) ProductProfile(config, opts, stepMs);

// Where a training step's time goes: every matrix product of one step at its own shape (forward, and the two products
// of its backward: dX = dY·W and dW = dYᵀ·X), timed alone, summed per step, against the step the library measured above.
// What the products do not explain is the step's other work (norms, softmax, the exit distribution, the losses, the
// optimizer, autograd's bookkeeping). Alone, each product reads its operands from a warm cache, so this is a lower bound
// on the products' share.
static void ProductProfile(OuroConfig c, Args opts, Dictionary<ScalarType, double> stepMs)
{
    int m = opts.Batch * opts.Seq, h = c.HiddenSize, loops = c.TotalUtSteps, layers = c.NumHiddenLayers;
    int qd = c.NumAttentionHeads * c.HeadDim, kvd = c.NumKeyValueHeads * c.HeadDim;
    var linears = new (string Name, int In, int Out, int PerStep)[]
    {
        ("q, o", h, qd, 2 * layers * loops), ("k, v", h, kvd, 2 * layers * loops),
        ("gate, up", h, c.IntermediateSize, 2 * layers * loops), ("down", c.IntermediateSize, h, layers * loops),
        ("LM head", h, c.VocabSize, loops),
    };
    Console.WriteLine($"\n## Where a step's time goes: its matrix products alone (batch {opts.Batch} x {opts.Seq} = {m} rows)\n");
    Console.WriteLine("| dtype | product | shape | per step | ms per call (fwd + 2 bwd) | ms per step | GFLOP/s |\n|---|---|---|---:|---:|---:|---:|");
    var totals = new Dictionary<ScalarType, double>();
    var crossEntropy = new Dictionary<ScalarType, double>();
    foreach (var dtype in opts.DTypes)
    {
        string name = dtype == ScalarType.BFloat16 ? "bfloat16" : "float32";
        double total = 0;
        using var g = new Generator(3);
        foreach (var (what, inF, outF, perStep) in linears)
        {
            using var scope = NewDisposeScope();
            var x = randn([m, inF], generator: g).to_type(dtype);
            var w = randn([outF, inF], generator: g).to_type(dtype);
            var dy = randn([m, outF], generator: g).to_type(dtype);
            double ms = Fastest(() => nn.functional.linear(x, w).Dispose()) + Fastest(() => matmul(dy, w).Dispose())
                        + Fastest(() => matmul(dy.t(), x).Dispose());
            total += ms * perStep;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {what} | {m}x{inF} -> {outF} | {perStep} | {ms:F3} | {ms * perStep:F1} | {3 * 2.0 * m * inF * outF / ms / 1e6:F1} |"));
        }
        {
            // Attention: per layer and loop, scores Q·Kᵀ and the weighted sum P·V forward, four products backward.
            using var scope = NewDisposeScope();
            int bh = opts.Batch * c.NumAttentionHeads, d = c.HeadDim, sq = opts.Seq;
            var q = randn([bh, sq, d], generator: g).to_type(dtype);
            var p = randn([bh, sq, sq], generator: g).to_type(dtype);
            double ms = 3 * (Fastest(() => matmul(q, q.transpose(1, 2)).Dispose()) + Fastest(() => matmul(p, q).Dispose()));
            int perStep = layers * loops;
            total += ms * perStep;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | attention | {bh}x({sq}x{d}) | {perStep} | {ms:F3} | {ms * perStep:F1} | {3 * 2 * 2.0 * bh * sq * sq * d / ms / 1e6:F1} |"));
        }
        totals[dtype] = total;
        {
            // Not a product: each loop's cross-entropy over the vocabulary, in float32 for both dtypes (the trainer
            // widens the logits), forward and backward: what the rest of a step holds that bfloat16 cannot speed up.
            using var scope = NewDisposeScope();
            var logits = randn([m, c.VocabSize], generator: g).to_type(dtype);
            var targets = randint(0, c.VocabSize, [m], generator: g);
            double ms = Fastest(() =>
            {
                using var inner = NewDisposeScope();
                var leaf = logits.detach().requires_grad_(true);
                nn.functional.cross_entropy(leaf.to_type(ScalarType.Float32), targets).backward();
            });
            crossEntropy[dtype] = ms * loops;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | (cross-entropy, float32) | {m}x{c.VocabSize} | {loops} | {ms:F3} | {ms * loops:F1} | |"));
        }
    }
    Console.WriteLine();
    foreach (var (dtype, products) in totals)
        if (stepMs.TryGetValue(dtype, out var step))
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{(dtype == ScalarType.BFloat16 ? "bfloat16" : "float32")}: products {products:F0} ms of the library's {step:F0} ms per step ({products / step:P0}); " +
                $"the rest {step - products:F0} ms, of which the float32 cross-entropy {crossEntropy[dtype]:F0} ms"));
    if (totals.TryGetValue(ScalarType.Float32, out var p32) && totals.TryGetValue(ScalarType.BFloat16, out var p16)
        && stepMs.TryGetValue(ScalarType.Float32, out var s32) && stepMs.TryGetValue(ScalarType.BFloat16, out var s16))
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bfloat16 against float32: products {p32 / p16:F2}x faster, the rest {(s32 - p32) / (s16 - p16):F2}x, the whole step {s32 / s16:F2}x"));
}

// The fastest of 5 calls after a warm-up, in ms.
static double Fastest(Action call)
{
    call();
    double best = double.MaxValue;
    for (int i = 0; i < 5; i++)
    {
        long t = Stopwatch.GetTimestamp();
        call();
        best = Math.Min(best, Stopwatch.GetElapsedTime(t).TotalMilliseconds);
    }
    return best;
}

// About one second of 2048² products: (FLOPs, seconds).
static (double Flops, double Seconds) Matmul(ScalarType dtype, int n = 2048)
{
    using var scope = NewDisposeScope();
    using var g = new Generator(2);
    var a = randn([n, n], generator: g).to_type(dtype);
    var b = randn([n, n], generator: g).to_type(dtype);
    matmul(a, b).Dispose();
    var clock = Stopwatch.StartNew();
    int reps = 0;
    while (clock.Elapsed.TotalSeconds < 1.0) { matmul(a, b).Dispose(); reps++; }
    return (2.0 * n * n * n * reps, clock.Elapsed.TotalSeconds);
}

/// <summary>The same model trained by a minimal hand-written loop: Stage I loss, TorchSharp's AdamW, clip, no metrics.</summary>
sealed class MinimalLoop(OuroForCausalLM lm, ITokenBatchSource source) : IDisposable
{
    private readonly TorchSharp.Modules.AdamW _opt = optim.AdamW(lm.parameters(), 1e-3, 0.9, 0.95, 1e-8, 0.1);
    private long _step;

    public void Run(int steps)
    {
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = source.GetBatch(_step++, 0).ToTensors(lm.Device);
            var o = lm.Forward(x);
            var logP = o.ExitLogProbabilities();                                   // (B, S, T)
            var ce = stack(o.Hidden.Select(h => nn.functional.cross_entropy(
                lm.Logits(h).to_type(ScalarType.Float32).view(-1, lm.Config.VocabSize), y.view(-1), reduction: nn.Reduction.None)).ToArray(), -1);
            var loss = ((logP.exp() * ce.view(logP.shape)).sum(-1) + 0.1 * (logP.exp() * logP).sum(-1)).mean();
            _opt.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(lm.parameters(), 1.0);
            _opt.step();
        }
    }

    public void Dispose() => _opt.Dispose();
}

static class Memory
{
    // Linux: writing 5 to clear_refs resets the peak-RSS high-water mark (VmHWM).
    public static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public static double PeakRssMb()
    {
        if (!File.Exists("/proc/self/status")) return double.NaN;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:"));
        return line is null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
    }
}

sealed record Args(int Steps, int Batch, int Seq, ScalarType[] DTypes, int StepsPerRound, bool SkipMinimal, bool Products = false, bool Help = false)
{
    public const string Usage = """
        Training-throughput benchmark: the small config (hidden 256, 2 layers x 4 loops, vocabulary 4096) trained by the
        library's trainer and by a minimal TorchSharp loop, against a matrix product of the same dtype in the same run.
          dotnet run -c Release --project examples/Benchmark -- [options]
          --steps N            training steps per dtype and loop (default 30)
          --steps-per-round N  steps between matrix-product bursts (default 5)
          --batch N            sequences per step (default 16)
          --seq N              tokens per sequence (default 128)
          --dtypes LIST        float32,bfloat16 (default both)
          --no-minimal         skip the minimal loop
          --products           then time each matrix product of a step at its own shape, forward and backward, per
                               dtype: how much of the step they explain, and bfloat16's gain on them and on the rest
          --help, -h           print this and exit
        LoopRPT step cost against Stage I: dotnet run -c Release --project examples/Benchmark -- looprpt [options]
        """;

    public static Args Parse(string[] args)
    {
        int steps = 30, batch = 16, seq = 128, perRound = 5;
        bool skipMinimal = false, products = false;
        var dtypes = new[] { ScalarType.Float32, ScalarType.BFloat16 };
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--steps": steps = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--batch": batch = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--steps-per-round": perRound = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--no-minimal": skipMinimal = true; break;
                case "--products": products = true; break;
                case "--help" or "-h": return new Args(steps, batch, seq, dtypes, perRound, skipMinimal, products, Help: true);
                case "--seq": seq = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--dtypes":
                    dtypes = Next().Split(',').Select(d => d.Trim().ToLowerInvariant() switch
                    {
                        "float32" or "f32" => ScalarType.Float32,
                        "bfloat16" or "bf16" => ScalarType.BFloat16,
                        var other => throw new ArgumentOutOfRangeException("--dtypes", other, "Expected float32 or bfloat16."),
                    }).ToArray();
                    break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'; see --help.");
            }
        }
        return new Args(steps, batch, seq, dtypes, perRound, skipMinimal, products);
    }
}
