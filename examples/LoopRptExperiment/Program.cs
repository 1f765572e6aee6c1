// LoopRPT experiment: pretrain a small looped model (Stage I + gate), then continue from the same checkpoint with
// (a) more Stage I and (b) LoopRPT — equal optimizer steps and tokens — and evaluate both and the base on held-out text
// (docs/method.md §5). Writes results.md, CSVs and SVG Pareto plots into --out.
//
//   dotnet run -c Release --project examples/LoopRptExperiment -- [--quick] [--corpus arith|text|both] [--out DIR]
//       [--steps N] [--pretrain-steps N] [--lr X] [--pretrain-lr X] [--threads N (default 1)] [--reuse-base]
//       [--variant name:lr=X,g=N,sigma=X,noise=gaussian|dropout,hard=top|all,kl=X,chunk=N,ema=X]...
// --reuse-base loads runs/experiment/<corpus>/base from an earlier run with the same sizes instead of pretraining again.
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Native;
using LoopRpt.Objectives;
using LoopRptExperiment;

var C = CultureInfo.InvariantCulture;
string? Arg(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
bool quick = args.Contains("--quick");
var corpusArg = Arg("--corpus") ?? "both";
var outDir = Arg("--out") ?? (quick ? "runs/experiment-quick/docs" : "docs/experiment");
var runDir = Arg("--runs") ?? "runs/experiment" + (quick ? "-quick" : "");

var settings = quick
    ? new Settings { PretrainSteps = 60, ArithExtraPretrainSteps = 0, GateSteps = 10, ContinueSteps = 8, EvalRows = 32, LogEvery = 25, Batch = 8 }
    : new Settings();
if (Arg("--steps") is { } st) settings = settings with { ContinueSteps = int.Parse(st, C) };
if (Arg("--pretrain-steps") is { } pst) settings = settings with { PretrainSteps = int.Parse(pst, C) };
if (Arg("--lr") is { } lr) settings = settings with { ContinueLr = double.Parse(lr, C) };
if (Arg("--pretrain-lr") is { } plr) settings = settings with { PretrainLr = double.Parse(plr, C) };

var variants = new List<Variant>();
for (int i = 0; i < args.Length - 1; i++)
    if (args[i] == "--variant") variants.Add(ParseVariant(args[i + 1], settings.ContinueLr));
if (variants.Count == 0) variants.Add(new Variant("LoopRPT", settings.ContinueLr, new LoopRptOptions { Seed = settings.Seed }));

TorchNative.EnsureLoaded();
// One intra-op thread by default: on a small model and a shared 2-core machine it was ~10× faster than libtorch's default.
TorchSharp.torch.set_num_threads(int.Parse(Arg("--threads") ?? "1", C));
Directory.CreateDirectory(Path.Combine(outDir, "img"));
var clock = Stopwatch.StartNew();
var experiment = new Experiment(settings, variants, runDir, outDir, args.Contains("--reuse-base"));
var corpora = corpusArg == "both" ? new[] { "arith", "text" } : [corpusArg];
var sections = new List<string>();
foreach (var corpus in corpora)
{
    var result = experiment.Run(corpus);
    sections.Add(result.Markdown);
    Console.WriteLine(result.Markdown);
}
var command = "dotnet run -c Release --project examples/LoopRptExperiment -- " + string.Join(" ", args);
File.WriteAllText(Path.Combine(outDir, "results.md"),
    $"# LoopRPT experiment results (generated)\n\nCommand: `{command.Trim()}`  \nTotal wall-clock: {clock.Elapsed.TotalSeconds:F0} s on {Environment.ProcessorCount} cores, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.\n\n"
    + string.Concat(sections));
Console.WriteLine($"Wrote {Path.Combine(outDir, "results.md")} in {clock.Elapsed.TotalSeconds:F0} s.");

static Variant ParseVariant(string spec, double defaultLr)
{
    var c = CultureInfo.InvariantCulture;
    var parts = spec.Split(':', 2);
    var o = new LoopRptOptions { Seed = 1 };
    double lr = defaultLr;
    if (parts.Length == 2)
        foreach (var kv in parts[1].Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var (k, v) = (kv.Split('=')[0], kv.Split('=')[1]);
            switch (k)
            {
                case "lr": lr = double.Parse(v, c); break;
                case "g": o.Rollouts = int.Parse(v, c); break;
                case "sigma": o.Sigma = double.Parse(v, c); break;
                case "noise": o.Noise = v == "dropout" ? NoiseKind.Dropout : NoiseKind.Gaussian; break;
                case "hard": o.HardTokens = v == "all" ? HardTokenMode.All : HardTokenMode.TopFraction; break;
                case "kl": o.KlCoef = double.Parse(v, c); break;
                case "chunk": o.RolloutsPerMicroBatch = int.Parse(v, c); break;
                case "ema": o.EmaDecay = double.Parse(v, c); break;
                default: throw new ArgumentException($"Unknown variant key '{k}' in '{spec}'; expected lr, g, sigma, noise, hard, kl, chunk, ema.");
            }
        }
    return new Variant(parts[0], lr, o);
}
