using LoopRpt.Checkpoints;
using LoopRpt.Cli;
using LoopRpt.Training;

namespace LoopRpt.Tests.Cli;

public sealed class CliExperimentTests
{
    private static (string Dir, string Train, string HeldOut) Setup()
    {
        var dir = CliRunner.TempDir();
        var train = Path.Combine(dir, "train.txt");
        var heldOut = Path.Combine(dir, "held.txt");
        File.WriteAllLines(train, CliRunner.CorpusLines(40));
        File.WriteAllLines(heldOut, CliRunner.CorpusLines(47).Skip(40));
        return (dir, train, heldOut);
    }

    /// <summary>A reduced experiment: tiny base model, 2 seeds, 2 continuation steps per arm.</summary>
    private static string[] Tiny(string train, string heldOut, string output, params string[] extra)
        => ["experiment", "--input", train, "--heldout", heldOut, "--out", output, "--seeds", "2", "--steps", "2", "--pretrain-steps", "4", "--gate-steps", "2",
            "--vocab-size", "280", "--hidden-size", "32", "--batch-size", "2", "--seq-len", "16", "--q", "0.2,0.5,1", "--log-every", "1",
            "--progress", "Plain", "--threads", "1", .. extra];

    private static string[] With(string[] args, string option, string value)
    {
        var copy = args.ToArray();
        copy[Array.IndexOf(copy, option) + 1] = value;
        return copy;
    }

    [Fact]
    public void RunsEndToEndAndAResumeTrainsNothing()
    {
        var (dir, train, heldOut) = Setup();
        var output = Path.Combine(dir, "exp");
        var r = CliRunner.Run(Tiny(train, heldOut, output));
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("experiment base=", r.Out);
        Assert.Contains("progress stage=pretrain", r.Out);                  // the base model was trained first
        Assert.Contains("progress stage=looprpt/seed-2", r.Out);
        Assert.Matches(@"summary completed=true premise=(holds|fails) runs_trained=10 ", r.Out);
        Assert.Contains("premise set=heldout bases=1 accuracy=", r.Out);
        Assert.Contains("compute arm=stage1-equal-compute-looprpt-all-tokens flops_per_step=", r.Out);
        Assert.Contains("verdict looprpt − stage1-equal-steps at s1, Hard (heldout):", r.Out);
        foreach (var f in new[] { "report.md", "results.csv", "pareto-heldout.svg" })
            Assert.True(File.Exists(Path.Combine(output, f)), f);
        Assert.True(ModelDirectory.IsModelDirectory(Path.Combine(output, "base")));
        Assert.False(Directory.Exists(Path.Combine(output, "base-checkpoints")));
        var csv = File.ReadAllLines(Path.Combine(output, "results.csv"));
        foreach (var arm in new[] { "stage1-equal-steps", "stage1-equal-compute", "stage1-equal-compute-looprpt-all-tokens", "looprpt", "looprpt-all-tokens" })
            foreach (var seed in new[] { 1, 2 })
                Assert.Contains(csv, l => l.StartsWith($"heldout,{arm},{seed},All,qexit,0.5,", StringComparison.Ordinal));

        var again = CliRunner.Run(Tiny(train, heldOut, output));
        Assert.True(again.Code == ExitCodes.Success, again.ToString());
        Assert.Contains("base=" + Path.Combine(output, "base") + " reused=true", again.Out);
        Assert.DoesNotContain("progress ", again.Out);
        Assert.Matches("summary completed=true premise=(holds|fails) runs_trained=0 ", again.Out);
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(output, "results.csv")));

        // Another base budget in the same folder is refused before training.
        var changed = CliRunner.Run(With(Tiny(train, heldOut, output), "--pretrain-steps", "5"));
        Assert.Equal(ExitCodes.Usage, changed.Code);
        Assert.Contains("was trained with [pretrain:4, gate:2]", changed.Err);
    }

    [Fact]
    public void ReusesAGivenBaseModel()
    {
        var (dir, train, heldOut) = Setup();
        var baseDir = Path.Combine(dir, "base");
        var t = CliRunner.Run(CliRunner.TinyTrain(train, baseDir, "pretrain:3,gate:2"));
        Assert.True(t.Code == ExitCodes.Success, t.ToString());
        var output = Path.Combine(dir, "exp");
        string[] Args(string buckets) => ["experiment", "--input", train, "--heldout", heldOut, "--out", output, "--base", baseDir, "--seeds", "1", "--steps", "2",
            "--batch-size", "2", "--seq-len", "16", "--no-default-variants", "--no-equal-compute", "--variant", "g4:g=4,lr=3e-4", "--progress", "None", "--threads", "1",
            "--buckets", buckets];
        var r = CliRunner.Run(Args("top"));
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        // Issue 19 §4: quantile buckets, labelled plainly in the report; another bucket rule is refused on resume.
        var report = File.ReadAllText(Path.Combine(output, "report.md"));
        Assert.Contains("Hard = top 20 % (H > ", report);
        Assert.Contains("`top:50,30,20`", report);
        var other = CliRunner.Run(Args("entropy"));
        Assert.Equal(ExitCodes.Usage, other.Code);
        Assert.Contains("buckets: was top:50,30,20, now unset", other.Err);
        Assert.DoesNotContain("progress ", r.Out);
        Assert.Contains("arms=stage1-equal-steps,looprpt,g4 ", r.Out);
        Assert.Matches("summary completed=true premise=(holds|fails) runs_trained=3 ", r.Out);
        Assert.False(Directory.Exists(Path.Combine(output, "base")));
        Assert.Contains("| g4 | LoopRPT, lr=0.0003, Rollouts=4 | 2 | 0.0003 |", File.ReadAllText(Path.Combine(output, "report.md")));
    }

    [Fact]
    public void BaseSeedsTrainSeveralBasesAndPairWithinThem()
    {
        var (dir, train, heldOut) = Setup();
        var output = Path.Combine(dir, "exp");
        var r = CliRunner.Run(With(Tiny(train, heldOut, output, "--base-seeds", "2", "--no-default-variants", "--no-equal-compute"), "--seeds", "1"));
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.True(ModelDirectory.IsModelDirectory(Path.Combine(output, "base")));
        Assert.True(ModelDirectory.IsModelDirectory(Path.Combine(output, "base-2")));
        // The second base takes the first one's tokenizer, and its own initialization (seed + 1).
        Assert.Equal(File.ReadAllText(Path.Combine(output, "base", "config.json")), File.ReadAllText(Path.Combine(output, "base-2", "config.json")));
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(output, "base", "model.safetensors")), File.ReadAllBytes(Path.Combine(output, "base-2", "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(output, "by-base", "b2", "runs", "looprpt", "seed-1", "evaluation.json")));
        Assert.Contains("premise set=heldout bases=2 ", r.Out);
        Assert.Contains("progress stage=looprpt/base-2/seed-1", r.Out);
        Assert.Matches("summary completed=true premise=(holds|fails) runs_trained=4 ", r.Out);
        Assert.Contains("2 base models × 1 seeds = 2 replicates", File.ReadAllText(Path.Combine(output, "report.md")));

        var both = CliRunner.Run("experiment", "--input", train, "--heldout", heldOut, "--out", output, "--base", Path.Combine(output, "base"), "--base-seeds", "2");
        Assert.Equal(ExitCodes.Usage, both.Code);
        Assert.Contains("--base-seeds trains the base models", both.Err);
        var zero = CliRunner.Run(With(Tiny(train, heldOut, Path.Combine(dir, "exp0"), "--base-seeds", "0"), "--seeds", "1"));
        Assert.Equal(ExitCodes.Usage, zero.Code);
        Assert.Contains("--base-seeds", zero.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "exp0")));
    }

    [Fact]
    public void BadArgumentsFailBeforeAnyTraining()
    {
        var (dir, train, heldOut) = Setup();
        var output = Path.Combine(dir, "exp");

        var missing = CliRunner.Run(Tiny(Path.Combine(dir, "nope.txt"), heldOut, output));
        Assert.Equal(ExitCodes.InputError, missing.Code);
        Assert.Contains("Input '" + Path.Combine(dir, "nope.txt") + "' does not exist", missing.Err);

        var seeds = CliRunner.Run(With(Tiny(train, heldOut, output), "--seeds", "0"));
        Assert.Equal(ExitCodes.Usage, seeds.Code);
        Assert.Contains("--seeds: Seeds must be at least 1", seeds.Err);

        var file = CliRunner.Run(Tiny(train, heldOut, train));
        Assert.Equal(ExitCodes.Usage, file.Code);
        Assert.Contains("is an existing file", file.Err);

        var variant = CliRunner.Run(Tiny(train, heldOut, output, "--variant", "wide:colour=red"));
        Assert.Equal(ExitCodes.Usage, variant.Code);
        Assert.Contains("--variant: Variant 'wide:colour=red': unknown key 'colour'", variant.Err);

        var baseAndShape = CliRunner.Run("experiment", "--input", train, "--heldout", heldOut, "--out", output, "--base", dir, "--loops", "3");
        Assert.Equal(ExitCodes.Usage, baseAndShape.Code);
        Assert.Contains("--loops applies only when the experiment trains its base model", baseAndShape.Err);

        var notAModel = CliRunner.Run("experiment", "--input", train, "--heldout", heldOut, "--out", output, "--base", dir);
        Assert.Equal(ExitCodes.ModelError, notAModel.Code);

        foreach (var r in new[] { missing, seeds, file, variant, baseAndShape, notAModel })
        {
            Assert.DoesNotContain("progress ", r.Out);
            Assert.DoesNotContain("   at ", r.Err);                        // no stack trace for user errors
        }
        Assert.False(Directory.Exists(output));
    }

    /// <summary>Issue 27 §3: without --pretrain-steps the base's Stage I runs until held-out loss stops improving.</summary>
    [Fact]
    public void PlateauBudgetIsTheDefaultAndTheReportStatesItsSteps()
    {
        var (dir, train, heldOut) = Setup();
        var output = Path.Combine(dir, "exp");
        // δ = 50 %: the second evaluation (step 4) cannot improve enough, so patience 1 stops Stage I there, long before the cap.
        var args = Without(With(Tiny(train, heldOut, output, "--no-default-variants", "--no-equal-compute", "--eval-every", "2", "--patience", "1", "--min-delta", "0.5",
                                     "--max-base-steps", "40"), "--seeds", "1"), "--pretrain-steps");
        var r = CliRunner.Run(args);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("plan=pretrain:40,gate:2 budget=plateau", r.Out);                  // the cap sizes the schedule
        Assert.Contains("base_budget base=" + Path.Combine(output, "base") + " stages=pretrain:4,gate:2 stopped=plateau steps=4 best_step=", r.Out);
        var report = File.ReadAllText(Path.Combine(output, "report.md"));
        Assert.Contains("pretrain 4 steps (plateau at step 4", report);
        Assert.True(report.IndexOf("pretrain 4 steps", StringComparison.Ordinal) < report.IndexOf("## Settings", StringComparison.Ordinal));
        var stored = PlateauOutcome.ReadFrom(Path.Combine(output, "base"))!;
        Assert.Equal(new long[] { 2, 4 }, stored.Curve.Select(c => c.Step));
        Assert.False(Directory.Exists(Path.Combine(output, "base-stage1")));

        var again = CliRunner.Run(args);                                                     // the base is reused with the same rule
        Assert.True(again.Code == ExitCodes.Success, again.ToString());
        Assert.Contains("reused=true", again.Out);
        var other = CliRunner.Run(With(args, "--patience", "2"));
        Assert.Equal(ExitCodes.Usage, other.Code);
        Assert.Contains("until a plateau", other.Err);
    }

    [Fact]
    public void BadBaseBudgetOptionsFailBeforeAnyTrainingNamingTheOption()
    {
        var (dir, train, heldOut) = Setup();
        var output = Path.Combine(dir, "exp");
        var plateau = Without(Tiny(train, heldOut, output), "--pretrain-steps");
        (string[] Args, string Message)[] cases =
        [
            ([.. plateau, "--base-budget", "long"], "--base-budget must be plateau or steps, got 'long'"),
            ([.. plateau, "--eval-every", "0"], "--eval-every: EvaluateEvery must be at least 1"),
            ([.. plateau, "--patience", "0"], "--patience: Patience must be at least 1"),
            ([.. plateau, "--min-delta", "1.5"], "--min-delta: MinRelativeDelta must be in [0, 1)"),
            ([.. plateau, "--max-base-steps", "10"], "--max-base-steps: MaxSteps must be at least EvaluateEvery (50)"),
            (Tiny(train, heldOut, output, "--base-budget", "plateau"), "--pretrain-steps sets a fixed Stage I budget"),
            (Tiny(train, heldOut, output, "--patience", "2"), "--patience applies only with --base-budget plateau"),
        ];
        foreach (var (args, message) in cases)
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Code == ExitCodes.Usage, r.ToString());
            Assert.Contains(message, r.Err);
            Assert.DoesNotContain("progress ", r.Out);
        }
        var withBase = CliRunner.Run("experiment", "--input", train, "--heldout", heldOut, "--out", output, "--base", dir, "--max-base-steps", "100");
        Assert.Equal(ExitCodes.Usage, withBase.Code);
        Assert.Contains("--max-base-steps applies only when the experiment trains its base model", withBase.Err);
        Assert.False(Directory.Exists(output));
    }

    private static string[] Without(string[] args, string option)
    {
        int i = Array.IndexOf(args, option);
        return [.. args.Take(i), .. args.Skip(i + 2)];
    }
}
