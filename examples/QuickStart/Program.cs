// QuickStart: the main job on an embedded default — no download, CPU, a few minutes on 2 cores.
//
//   dotnet run -c Release --project examples/QuickStart [-- --quick] [--out DIR] [--threads N] [--set Name=value ...]
//
// Generates pointer-chasing lines whose answer needs k dependent lookups, trains a looped model (Ouro Stage I + gate)
// from scratch, continues it with LoopRPT, and writes answer accuracy per loop and mean exit step by k, before and after
// LoopRPT, into DIR (default runs/quickstart), with the QuickStart's bars. `--set` overrides a setting of
// QuickStartSettings (e.g. --set Hidden=64 --set PretrainSteps=800). See README.md.
using LoopRpt.QuickStart;

string? Arg(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
bool quick = args.Contains("--quick");
var outDir = Arg("--out") ?? (quick ? "runs/quickstart-quick" : "runs/quickstart");
var sets = args.Select((a, i) => (a, i)).Where(x => x.a == "--set" && x.i + 1 < args.Length).Select(x => args[x.i + 1]).ToArray();
var settings = (quick ? QuickStartSettings.Quick() : QuickStartSettings.Default()).With(sets);
LoopRpt.Native.TorchNative.EnsureLoaded();
// One intra-op thread: on a model this small, libtorch's default threading costs more than it gains (docs/benchmarks.md).
TorchSharp.torch.set_num_threads(int.Parse(Arg("--threads") ?? "1", System.Globalization.CultureInfo.InvariantCulture));
// --experiment DIR: the multi-seed LoopRPT protocol on this task from the base model in --out (trained first unless
// --reuse is given and --out already holds one). --seeds N (default 3), --steps N (default 60), --lr X (default 1e-4),
// --buckets SPEC (entropy:A,B,C or top:A,B,C as in `looprpt experiment`; default the method's entropy thresholds);
// --base-seeds N (default 1): N QuickStart runs as base models (seeds Seed, Seed+1, ...; DIR, DIR-base-2, ...), so that ± includes them.
var c = System.Globalization.CultureInfo.InvariantCulture;
var experimentDir = Arg("--experiment");
int baseSeeds = int.Parse(Arg("--base-seeds") ?? "1", c);
if (baseSeeds < 1) { Console.Error.WriteLine("--base-seeds must be at least 1."); return 2; }
var baseDirs = Enumerable.Range(1, baseSeeds).Select(b => QuickStartPipeline.BaseSeedDirectory(outDir, b)).ToArray();
for (int b = 0; b < baseDirs.Length; b++)
{
    if (experimentDir is not null && args.Contains("--reuse") && Directory.Exists(Path.Combine(baseDirs[b], "models", "base"))) continue;
    var result = QuickStartPipeline.Run(settings with { Seed = settings.Seed + b }, baseDirs[b], Console.Out);
    Console.WriteLine();
    Console.WriteLine(File.ReadAllText(Path.Combine(baseDirs[b], "README.md")));
    Console.WriteLine($"Wrote {result.Files.Count} outputs to {Path.GetFullPath(baseDirs[b])} in {result.Elapsed.TotalSeconds:F0} s.");
}
if (experimentDir is not null)
{
    QuickStartPipeline.RunExperiment(settings, baseDirs, experimentDir, int.Parse(Arg("--seeds") ?? "3", c), long.Parse(Arg("--steps") ?? "60", c),
        double.Parse(Arg("--lr") ?? "1e-4", c), Console.Out, buckets: Arg("--buckets") is { } bk ? LoopRpt.Evaluation.EntropyBuckets.Parse(bk) : null);
    Console.WriteLine(File.ReadAllText(Path.Combine(experimentDir, "report.md")));
}
return 0;
