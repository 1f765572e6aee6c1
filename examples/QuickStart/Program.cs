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
// --buckets SPEC (entropy:A,B,C or top:A,B,C as in `looprpt experiment`; default the method's entropy thresholds).
var experimentDir = Arg("--experiment");
if (experimentDir is null || !args.Contains("--reuse") || !Directory.Exists(Path.Combine(outDir, "models", "base")))
{
    var result = QuickStartPipeline.Run(settings, outDir, Console.Out);
    Console.WriteLine();
    Console.WriteLine(File.ReadAllText(Path.Combine(outDir, "README.md")));
    Console.WriteLine($"Wrote {result.Files.Count} outputs to {Path.GetFullPath(outDir)} in {result.Elapsed.TotalSeconds:F0} s.");
}
if (experimentDir is not null)
{
    var c = System.Globalization.CultureInfo.InvariantCulture;
    QuickStartPipeline.RunExperiment(settings, outDir, experimentDir, int.Parse(Arg("--seeds") ?? "3", c), long.Parse(Arg("--steps") ?? "60", c),
        double.Parse(Arg("--lr") ?? "1e-4", c), Console.Out, buckets: Arg("--buckets") is { } b ? LoopRpt.Evaluation.EntropyBuckets.Parse(b) : null);
    Console.WriteLine(File.ReadAllText(Path.Combine(experimentDir, "report.md")));
}
