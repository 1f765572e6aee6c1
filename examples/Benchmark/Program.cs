// Training-throughput benchmark (issue 2): trains the fixed small config with the library's trainer and prints
// tokens/s, model FLOPs per token, achieved FLOP/s and model-FLOPs utilization against a large matrix product of the
// same dtype measured in the same run, plus peak memory. Usage:
//   dotnet run -c Release --project examples/Benchmark -- [--steps 30] [--batch 16] [--seq 128] [--dtypes float32,bfloat16]
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Objectives;
using LoopRpt.Training;
using static TorchSharp.torch;

var opts = Args.Parse(args);
TorchNative.EnsureLoaded();
Console.WriteLine($"# LoopRpt training benchmark");
Console.WriteLine($"threads={get_num_threads()} steps={opts.Steps} batch={opts.Batch} seq={opts.Seq} processors={Environment.ProcessorCount}");
var config = OuroConfig.Small();
Console.WriteLine($"config: hidden {config.HiddenSize}, layers {config.NumHiddenLayers}, loops {config.TotalUtSteps}, vocab {config.VocabSize}, params {config.ParameterCount():N0}");
double flopsPerToken = config.TrainingFlopsPerToken(opts.Seq);
Console.WriteLine($"model FLOPs per token (fwd+bwd, matmuls, LM head at every loop): {flopsPerToken / 1e6:F2} MFLOP");
Console.WriteLine();
Console.WriteLine("| dtype | tokens/s | achieved GFLOP/s | matmul 2048² GFLOP/s | MFU vs matmul | ms/step | peak RSS MB |");
Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");

var rng = new Random(1);
var tokens = Enumerable.Range(0, 200_000).Select(_ => rng.Next(config.VocabSize)).ToArray();
foreach (var dtype in opts.DTypes)
{
    Memory.ResetPeak();
    double matmul = MatmulGflops(dtype);
    using var g = new Generator(1);
    using var lm = new OuroForCausalLM(config, dtype: dtype, generator: g);
    var source = new PackedTokenSource(tokens, opts.Batch, opts.Seq, seed: 1);
    TrainingProgress? last = null;
    var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1_000_000, Progress = new Sync(p => last = p) });
    trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), 3)]);               // warm-up
    var clock = Stopwatch.StartNew();
    trainer.Train(lm, source, [new TrainingStage(new PretrainObjective(), opts.Steps)]);
    clock.Stop();
    double tokPerSec = (double)opts.Steps * opts.Batch * opts.Seq / clock.Elapsed.TotalSeconds;
    double achieved = tokPerSec * flopsPerToken / 1e9;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"| {(dtype == ScalarType.BFloat16 ? "bfloat16" : "float32")} | {tokPerSec:F0} | {achieved:F1} | {matmul:F1} | {achieved / matmul:P1} | {clock.Elapsed.TotalMilliseconds / opts.Steps:F0} | {Memory.PeakRssMb():F0} |"));
    if (last is not null && !double.IsFinite(last.Loss)) Console.WriteLine($"warning: non-finite loss in the {dtype} run");
}

static double MatmulGflops(ScalarType dtype, int n = 2048, int reps = 10)
{
    using var scope = NewDisposeScope();
    using var g = new Generator(2);
    var a = randn([n, n], generator: g).to_type(dtype);
    var b = randn([n, n], generator: g).to_type(dtype);
    for (int i = 0; i < 2; i++) matmul(a, b).Dispose();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < reps; i++) matmul(a, b).Dispose();
    return 2.0 * n * n * n * reps / clock.Elapsed.TotalSeconds / 1e9;
}

sealed class Sync(Action<TrainingProgress> a) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => a(value);
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

sealed record Args(int Steps, int Batch, int Seq, ScalarType[] DTypes)
{
    public static Args Parse(string[] args)
    {
        int steps = 30, batch = 16, seq = 128;
        var dtypes = new[] { ScalarType.Float32, ScalarType.BFloat16 };
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--steps": steps = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--batch": batch = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--seq": seq = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--dtypes":
                    dtypes = Next().Split(',').Select(d => d.Trim().ToLowerInvariant() switch
                    {
                        "float32" or "f32" => ScalarType.Float32,
                        "bfloat16" or "bf16" => ScalarType.BFloat16,
                        var other => throw new ArgumentOutOfRangeException("--dtypes", other, "Expected float32 or bfloat16."),
                    }).ToArray();
                    break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'. Options: --steps N --batch N --seq N --dtypes float32,bfloat16");
            }
        }
        return new Args(steps, batch, seq, dtypes);
    }
}
