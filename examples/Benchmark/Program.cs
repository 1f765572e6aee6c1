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
        if (loop == "library") libTok = tokPerSec;
        double achieved = tokPerSec * flopsPerToken / 1e9;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {name} | {loop} | {tokPerSec:F0} | {achieved:F1} | {matmul:F1} | {achieved / matmul:P1} | {seconds * 1000 / steps:F0} | {Memory.PeakRssMb():F0} |"));
    }
    if (minSeconds > 0)
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | library ÷ minimal | {libTok / (steps * opts.Batch * opts.Seq / minSeconds):P1} | | | | | |"));
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

sealed record Args(int Steps, int Batch, int Seq, ScalarType[] DTypes, int StepsPerRound, bool SkipMinimal, bool Help = false)
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
          --help, -h           print this and exit
        LoopRPT step cost against Stage I: dotnet run -c Release --project examples/Benchmark -- looprpt [options]
        """;

    public static Args Parse(string[] args)
    {
        int steps = 30, batch = 16, seq = 128, perRound = 5;
        bool skipMinimal = false;
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
                case "--help" or "-h": return new Args(steps, batch, seq, dtypes, perRound, skipMinimal, Help: true);
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
        return new Args(steps, batch, seq, dtypes, perRound, skipMinimal);
    }
}
