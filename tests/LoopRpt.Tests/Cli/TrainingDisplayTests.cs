using LoopRpt.Cli.Display;
using LoopRpt.Training;
using Spectre.Console;

namespace LoopRpt.Tests.Cli;

/// <summary>Issue 19 §1–3: the live display at fixed widths, frozen clocks, slowdown warnings, named summaries.</summary>
public sealed class TrainingDisplayTests
{
    private static readonly DateTime T0 = new(2025, 1, 1, 12, 0, 0, DateTimeKind.Utc);

    private sealed class Clock
    {
        public DateTime Now { get; set; } = T0;
    }

    private static TrainingProgress Report(string stage, int index, long step, long steps, double seconds, double tokS, params (string, double[])[] metrics)
    {
        var m = metrics.ToDictionary(x => x.Item1, x => x.Item2);
        m.TryAdd("loss", [2.5]);
        return new TrainingProgress
        {
            Stage = stage, StageIndex = index, Step = step, StageSteps = steps, GlobalStep = step, Loss = m["loss"][0], Metrics = m,
            LearningRate = 1e-3, GradNorm = 1, TokensPerSecond = tokS, TokensSeen = step * 512, SkippedSteps = 0, Elapsed = TimeSpan.FromSeconds(seconds),
        };
    }

    private static readonly (string, double[])[] Pretrain = [("loss", [3.7564]), ("beta", [0.1]), ("expected_exit_step", [2.31]), ("step_loss", [4.1, 3.9, 3.8, 3.7123])];
    private static readonly (string, double[])[] Gate = [("loss", [0.6931]), ("continue_label", [0.5, 0.4, 0.3]), ("expected_exit_step", [2.0]), ("step_loss", [4.0, 3.8, 3.7, 3.65])];
    private static readonly (string, double[])[] LoopRpt = [("loss", [0.1234]), ("reward_mean", [-0.0123]), ("student_exit_step", [2.5]), ("forward_passes", [8.0]), ("step_loss", [4.0, 3.8, 3.7, 3.6])];

    /// <summary>
    /// pretrain finished at 14 s, gate running, looprpt waiting — the state the issue saw break at 80 columns — then 27 s later.
    /// </summary>
    private static (TrainingMonitor Monitor, Clock Clock) ThreeStages()
    {
        var clock = new Clock();
        var m = new TrainingMonitor([("pretrain", 500), ("gate", 50), ("looprpt", 60)], clock: () => clock.Now);
        m.Report(Report("pretrain", 0, 250, 500, 7, 2982, Pretrain));
        clock.Now = T0.AddSeconds(14);
        m.Report(Report("pretrain", 0, 500, 500, 14, 2950, Pretrain));
        clock.Now = T0.AddSeconds(16);
        m.Report(Report("gate", 1, 10, 50, 2, 9000, Gate));
        return (m, clock);
    }

    /// <summary>Renders the board through Spectre.Console on a console of the given width, as the terminal would get it.</summary>
    private static string[] Render(ProgressBoard board, int width, int height = 40)
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = width;
        console.Profile.Height = height;
        console.Write(board);
        return writer.ToString().Replace("\r", "").TrimEnd('\n').Split('\n');
    }

    [Theory]
    [InlineData(120)]
    [InlineData(80)]
    [InlineData(60)]
    [InlineData(40)]
    public void TheBoardFitsTheWidthWithABarPerStageAndNothingWraps(int width)
    {
        var (monitor, _) = ThreeStages();
        var lines = Render(new ProgressBoard(monitor), width);
        Assert.All(lines, l => Assert.True(l.Length <= width, $"{l.Length} > {width}: '{l}'"));
        // 2 lines for each stage that reported, 1 for the waiting one: nothing wrapped onto an extra line.
        Assert.Equal(5, lines.Length);
        Assert.StartsWith("1. pretrain", lines[0]);
        Assert.StartsWith("2. gate", lines[2]);
        Assert.StartsWith("3. looprpt", lines[4]);
        foreach (var i in new[] { 0, 2, 4 })
            Assert.True(lines[i].Count(ch => ch == '━') >= 8, $"no bar at {width} columns: '{lines[i]}'");
        Assert.Contains("500/500", lines[0]);
        Assert.Contains("10/50", lines[2]);
        Assert.Contains(width >= 60 ? "waiting" : "0/60", lines[4]);
        Assert.DoesNotContain(lines, l => l.Contains("--:--") || l.Trim() == "…" || l.Trim().Length == 0);
        // The numbers line names the stage's loss and the LM loss every stage shares.
        Assert.Contains("pretrain_objective=3.7564", lines[1]);
        Assert.Contains("gate_loss=0.6931", lines[3]);
        if (width >= 60) Assert.Contains("lm_loss=3.7123", lines[1]);
    }

    [Fact]
    public void AFinishedStagesClockStopsWhileTheRunningOneTicks()
    {
        var (monitor, clock) = ThreeStages();
        var board = new ProgressBoard(monitor);
        var before = board.Lines(80).Select(l => l.Text).ToArray();
        Assert.Contains("0:14 done", before[0]);
        Assert.Contains("0:02 eta", before[2]);                       // gate: 2 s at its report
        clock.Now = T0.AddSeconds(16 + 27);
        var after = board.Lines(80).Select(l => l.Text).ToArray();
        Assert.Contains("0:14 done", after[0]);                        // frozen at 14 s, not 41 s
        Assert.Contains("0:29 eta 0:00", after[2]);                    // 2 s + 27 s since; the 8 s estimate has run out
        Assert.Equal(TimeSpan.FromSeconds(14), monitor.Elapsed(monitor.Stages[0]));
    }

    [Fact]
    public void TooManyRunsForTheHeightFoldIntoSummaryLines()
    {
        var runs = Enumerable.Range(1, 12).Select(i => ($"looprpt-all-tokens/seed-{i}", 60L)).ToArray();
        var clock = new Clock();
        var monitor = new TrainingMonitor(runs, [true, true, true], () => clock.Now);
        monitor.Report(Report(runs[3].Item1, 3, 60, 60, 30, 500, LoopRpt));
        monitor.Report(Report(runs[4].Item1, 4, 20, 60, 10, 500, LoopRpt));
        var lines = Render(new ProgressBoard(monitor), 80, height: 8);
        // As tall as the console allows (7 of 8 lines; a live display that shrinks leaves blank lines), the running run whole.
        Assert.Equal(7, lines.Length);
        Assert.StartsWith("3 finished: looprpt-all-tokens/seed-1, ", lines[0]);
        Assert.StartsWith("4. looprpt-all-tokens/seed-4 ", lines[1]);
        Assert.StartsWith("5. looprpt-all-tokens/seed-5 ", lines[2]);      // experiment labels fit whole at 80
        Assert.StartsWith("   looprpt_objective=0.1234", lines[3]);
        Assert.StartsWith("6. looprpt-all-tokens/seed-6 ", lines[4]);
        Assert.StartsWith("7. looprpt-all-tokens/seed-7 ", lines[5]);
        Assert.StartsWith("5 waiting: looprpt-all-tokens/seed-8, ", lines[6]);
        Assert.All(lines, l => Assert.True(l.Length <= 80, l));
        // A little more room: finished runs keep their bar line and lose only their numbers line.
        var taller = Render(new ProgressBoard(monitor), 80, height: 14);
        Assert.Equal(13, taller.Length);
        Assert.Contains("done earlier", taller[0]);
        Assert.StartsWith("4. looprpt-all-tokens/seed-4 ", taller[3]);
        Assert.StartsWith("5. looprpt-all-tokens/seed-5 ", taller[4]);
        Assert.Equal(14, Render(new ProgressBoard(monitor), 80, height: 15).Length);         // with room for all, all
    }

    [Fact]
    public void ACollapseInThroughputWarnsOncePerStage()
    {
        var monitor = new TrainingMonitor([("pretrain", 100)]);
        Assert.Null(monitor.Report(Report("pretrain", 0, 10, 100, 1.0, 1800, Pretrain)));
        Assert.Null(monitor.Report(Report("pretrain", 0, 20, 100, 2.0, 2000, Pretrain)));
        Assert.Null(monitor.Report(Report("pretrain", 0, 30, 100, 3.2, 1500, Pretrain)));     // noise, not a collapse
        Assert.Null(monitor.Report(Report("pretrain", 0, 31, 100, 3.4, 300, Pretrain)));      // 0.2 s: too short to judge
        var p = Report("pretrain", 0, 40, 100, 7.7, 400, Pretrain);
        var warning = monitor.Report(p);                                                       // median of 1800, 2000, 1500, 300: 1650
        Assert.NotNull(warning);
        Assert.Contains("throughput fell to 400 tokens/s, 0.24× this stage's earlier 1,650 (median)", warning);
        Assert.Contains("load average", warning);
        Assert.Contains(" slowdown=0.24", monitor.PlainSuffix(p));
        Assert.Null(monitor.Report(Report("pretrain", 0, 50, 100, 12, 350, Pretrain)));       // said once
        var q = Report("pretrain", 0, 60, 100, 13, 1900, Pretrain);
        monitor.Report(q);
        Assert.Equal("", monitor.PlainSuffix(q));                                            // recovered
        Assert.Contains(" slowdown=0.23", monitor.StageLines()[0]);                         // the worst (350 / 1500), in the summary
        Assert.Single(monitor.Slowdowns);
        Assert.DoesNotContain(new ProgressBoard(monitor).Lines(80), l => l.Text.Contains("SLOW"));
        monitor.Report(Report("pretrain", 0, 70, 100, 20, 300, Pretrain));                    // median of 7 earlier: 1500
        Assert.Contains(new ProgressBoard(monitor).Lines(80), l => l.Text.Contains("SLOW 0.20×"));
    }

    [Fact]
    public void StageLinesNameEveryLossAndLoopRptsComputePerToken()
    {
        var monitor = new TrainingMonitor([("pretrain", 20), ("gate", 10), ("looprpt", 10)]);
        monitor.Report(Report("pretrain", 0, 10, 20, 1, 3000, Pretrain));
        monitor.Report(Report("pretrain", 0, 20, 20, 3, 1000, Pretrain));      // 1 s at 3000 and 2 s at 1000: mean 1667
        monitor.Report(Report("gate", 1, 10, 10, 1, 9000, Gate));
        var rpt = Report("looprpt", 2, 10, 10, 20, 500, LoopRpt);
        monitor.Report(rpt);
        var lines = monitor.StageLines();
        Assert.Equal(3, lines.Count);
        Assert.StartsWith("stage index=1 name=pretrain steps=20/20 pretrain_objective=3.7564 lm_loss=3.7123 lm_loss_by_step=[4.1000,3.9000,3.8000,3.7123] exit_step=2.31 tok_s=1667 seconds=3.0", lines[0]);
        Assert.StartsWith("stage index=2 name=gate steps=10/10 gate_loss=0.6931 lm_loss=3.6500", lines[1]);
        Assert.StartsWith("stage index=3 name=looprpt steps=10/10 looprpt_objective=0.1234 lm_loss=3.6000", lines[2]);
        Assert.Contains(" exit_step=2.50 reward=-0.0123 tok_s=500 fwd_per_tok=8.00 fwd_tok_s=4000 ", lines[2]);
        Assert.DoesNotContain("fwd", lines[0]);
        Assert.Equal(" fwd_tok_s=4000", monitor.PlainSuffix(rpt));
        Assert.Equal("last_stage=looprpt looprpt_objective=0.1234 lm_loss=3.6000", monitor.LastStageFields());
        // Experiment runs are relabeled ARM/seed-N: the kind comes from the metrics.
        Assert.Equal("looprpt_objective", TrainingMonitor.LossName(rpt with { Stage = "looprpt-all-tokens/seed-2" }));
        Assert.Equal("pretrain_objective", TrainingMonitor.LossName(Report("stage1-equal-steps/seed-1", 0, 1, 1, 1, 1, Pretrain)));
    }
}
