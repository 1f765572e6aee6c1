// Cost of a LoopRPT step against a Stage I step on the same model (docs/looprpt.md, "Cost of a step"). Usage:
//   dotnet run -c Release --project examples/Benchmark -- looprpt [--hidden 128] [--intermediate 352] [--heads 4]
//       [--layers 2] [--loops 4] [--vocab 2048] [--batch 16] [--seq 128] [--rollouts 8] [--rollouts-per-micro 0]
//       [--reps 3] [--threads 1] [--no-rss]
// Timing: repetitions alternate one Stage I step and one LoopRPT step (each through the library's trainer: forward,
// backward, clip, AdamW, and for LoopRPT the EMA update), so both see the same machine load; the best of the
// repetitions is reported per objective. Peak RSS: each objective runs two steps in a fresh child process of this
// program, which prints its VmHWM (Linux), so one objective's peak never includes the other's.
using System.Diagnostics;
using System.Globalization;
using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;
using static TorchSharp.torch;

static class LoopRptCost
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        var o = CostArgs.Parse(args);
        set_num_threads(o.Threads);
        if (o.Child is { } child) return Child(o, child);

        var config = o.Config();
        Console.WriteLine("# LoopRPT step cost against Stage I");
        Console.WriteLine(string.Create(C, $"threads={get_num_threads()} hidden={config.HiddenSize} intermediate={config.IntermediateSize} heads={config.NumAttentionHeads} " +
                                           $"layers={config.NumHiddenLayers} loops={config.TotalUtSteps} vocab={config.VocabSize} params={config.ParameterCount():N0} " +
                                           $"batch={o.Batch}x{o.Seq} rollouts={o.Rollouts} rollouts_per_micro={o.RolloutsPerMicro} reps={o.Reps}"));
        using var g = new Generator(1);
        using var lm = new OuroForCausalLM(config, generator: g);
        var source = Source(o, config);
        var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1_000_000 });
        TimeStep(trainer, lm, source, o, loopRpt: false);                                    // warm-up
        TimeStep(trainer, lm, source, o, loopRpt: true);
        double bestStage1 = double.MaxValue, bestRpt = double.MaxValue;
        var ratios = new List<double>();
        for (int r = 0; r < o.Reps; r++)
        {
            double s1 = TimeStep(trainer, lm, source, o, loopRpt: false), rpt = TimeStep(trainer, lm, source, o, loopRpt: true);
            Console.WriteLine(string.Create(C, $"rep {r + 1}: stage1 {s1:F3} s/step, looprpt {rpt:F3} s/step, ratio {rpt / s1:F2}"));
            bestStage1 = Math.Min(bestStage1, s1);
            bestRpt = Math.Min(bestRpt, rpt);
            ratios.Add(rpt / s1);
        }
        ratios.Sort();
        double median = ratios.Count % 2 == 1 ? ratios[ratios.Count / 2] : (ratios[ratios.Count / 2 - 1] + ratios[ratios.Count / 2]) / 2;
        long tokens = (long)o.Batch * o.Seq;
        Console.WriteLine();
        Console.WriteLine("| objective | s/step (best of reps) | tokens/s | peak RSS MB (own process, 2 steps) |");
        Console.WriteLine("|---|---:|---:|---:|");
        string rssStage1 = o.NoRss ? "–" : ChildPeak(args, "stage1"), rssRpt = o.NoRss ? "–" : ChildPeak(args, "looprpt");
        Console.WriteLine(string.Create(C, $"| Stage I | {bestStage1:F3} | {tokens / bestStage1:F0} | {rssStage1} |"));
        Console.WriteLine(string.Create(C, $"| LoopRPT (G = {o.Rollouts}) | {bestRpt:F3} | {tokens / bestRpt:F0} | {rssRpt} |"));
        Console.WriteLine(string.Create(C, $"LoopRPT ÷ Stage I time per step: {bestRpt / bestStage1:F2} (best of each), {median:F2} (median of the repetitions' ratios)"));
        return 0;
    }

    /// <summary>Seconds of one optimizer step of a one-stage plan (the plan also builds the optimizer and, for LoopRPT, the teacher).</summary>
    private static double TimeStep(LoopedLmTrainer trainer, OuroForCausalLM lm, ITokenBatchSource source, CostArgs o, bool loopRpt)
    {
        using ITrainingObjective objective = loopRpt
            ? new LoopRptObjective(new LoopRptObjectiveOptions { Rollouts = o.Rollouts, RolloutsPerMicroBatch = o.RolloutsPerMicro, Seed = 1 })
            : new PretrainObjective();
        var clock = Stopwatch.StartNew();
        trainer.Train(lm, source, [new TrainingStage(objective, 1)]);
        return clock.Elapsed.TotalSeconds;
    }

    private static PackedTokenSource Source(CostArgs o, OuroConfig config)
    {
        var rng = new Random(1);
        var tokens = Enumerable.Range(0, o.Batch * (o.Seq + 1) * 8).Select(_ => rng.Next(config.VocabSize)).ToArray();
        return new PackedTokenSource(tokens, o.Batch, o.Seq, seed: 1);
    }

    /// <summary>Child process: two steps of one objective, then its peak RSS.</summary>
    private static int Child(CostArgs o, string which)
    {
        var config = o.Config();
        using var g = new Generator(1);
        using var lm = new OuroForCausalLM(config, generator: g);
        var source = Source(o, config);
        var trainer = new LoopedLmTrainer(new TrainerOptions { LogEvery = 1_000_000 });
        double before = StatusMb("VmRSS");
        for (int i = 0; i < 2; i++) TimeStep(trainer, lm, source, o, loopRpt: which == "looprpt");
        Console.WriteLine(string.Create(C, $"peak_rss_mb={StatusMb("VmHWM"):F0} rss_before_steps_mb={before:F0}"));
        return 0;
    }

    private static string ChildPeak(string[] args, string which)
    {
        var self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(typeof(LoopRptCost).Assembly.Location);
        psi.ArgumentList.Add("looprpt");
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--child");
        psi.ArgumentList.Add(which);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("peak_rss_mb=", StringComparison.Ordinal));
        return line is null ? $"(child failed, exit {p.ExitCode})" : line.Split(' ')[0]["peak_rss_mb=".Length..];
    }

    private static double StatusMb(string key)
    {
        if (!File.Exists("/proc/self/status")) return double.NaN;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key + ":", StringComparison.Ordinal));
        return line is null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], C) / 1024.0;
    }
}

sealed record CostArgs(int Hidden, int Intermediate, int Heads, int Layers, int Loops, int Vocab, int Batch, int Seq, int Rollouts,
                       int RolloutsPerMicro, int Reps, int Threads, bool NoRss, string? Child)
{
    public OuroConfig Config() => new OuroConfig
    {
        VocabSize = Vocab, HiddenSize = Hidden, IntermediateSize = Intermediate, NumHiddenLayers = Layers, NumAttentionHeads = Heads,
        NumKeyValueHeads = Heads, TotalUtSteps = Loops, RopeTheta = 10_000, MaxPositionEmbeddings = Math.Max(2048, Seq),
    }.Validate();

    public static CostArgs Parse(string[] args)
    {
        int hidden = 128, intermediate = 0, heads = 4, layers = 2, loops = 4, vocab = 2048, batch = 16, seq = 128, rollouts = 8, perMicro = 0, reps = 3, threads = 1;
        bool noRss = false;
        string? child = null;
        for (int i = 0; i < args.Length; i++)
        {
            int Next() => i + 1 < args.Length ? int.Parse(args[++i], CultureInfo.InvariantCulture) : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--hidden": hidden = Next(); break;
                case "--intermediate": intermediate = Next(); break;
                case "--heads": heads = Next(); break;
                case "--layers": layers = Next(); break;
                case "--loops": loops = Next(); break;
                case "--vocab": vocab = Next(); break;
                case "--batch": batch = Next(); break;
                case "--seq": seq = Next(); break;
                case "--rollouts": rollouts = Next(); break;
                case "--rollouts-per-micro": perMicro = Next(); break;
                case "--reps": reps = Next(); break;
                case "--threads": threads = Next(); break;
                case "--no-rss": noRss = true; break;
                case "--child": child = i + 1 < args.Length ? args[++i] : throw new ArgumentException("--child needs a value."); break;
                default:
                    throw new ArgumentException($"Unknown option '{args[i]}'. Options: --hidden --intermediate (default 11/4 hidden) --heads --layers --loops --vocab " +
                                                "--batch --seq --rollouts --rollouts-per-micro --reps --threads --no-rss");
            }
        }
        if (intermediate == 0) intermediate = hidden * 11 / 4;
        return new CostArgs(hidden, intermediate, heads, layers, loops, vocab, batch, seq, rollouts, perMicro, reps, threads, noRss, child);
    }
}
