using System.Globalization;
using LoopRpt.Training;
using Spectre.Console;

namespace LoopRpt.Cli.Display;

/// <summary>How training progress is shown.</summary>
public enum ProgressMode
{
    /// <summary>Live bars on a terminal, plain lines when the output is redirected.</summary>
    Auto,
    /// <summary>Live bars (falls back to plain lines when there is no terminal).</summary>
    Live,
    /// <summary>One parseable <c>progress key=value ...</c> line per report.</summary>
    Plain,
    /// <summary>Only the final summary.</summary>
    None,
}

/// <summary>
/// Shows <see cref="TrainingProgress"/> reports: a Spectre.Console live display (one bar per stage with loss, reward,
/// exit step, tokens/s and ETA) on a terminal, or plain <c>progress stage=... step=... loss=...</c> lines
/// (<see cref="TrainingProgress.ToString"/>) when redirected, so logs stay parseable.
/// </summary>
internal static class TrainingDisplay
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>
    /// Runs <paramref name="body"/> with a progress sink for <paramref name="stages"/> (one bar each when live). Entries
    /// marked in <paramref name="completed"/> start full (e.g. experiment runs done earlier); a report whose
    /// <see cref="TrainingProgress.StageSteps"/> differs from the announced steps resizes its bar (steps known late).
    /// </summary>
    public static T Run<T>(CliContext ctx, ProgressMode mode, IReadOnlyList<(string Name, long Steps)> stages, Func<IProgress<TrainingProgress>?, T> body,
                           IReadOnlyList<bool>? completed = null)
    {
        bool live = mode is ProgressMode.Auto or ProgressMode.Live && ctx.Interactive && AnsiConsole.Profile.Capabilities.Interactive;
        if (!live) return body(mode == ProgressMode.None ? null : new Sync(p => ctx.Output.WriteLine("progress " + p)));
        bool Done(int i) => completed is not null && i < completed.Count && completed[i];
        int firstOpen = Enumerable.Range(0, stages.Count).FirstOrDefault(i => !Done(i), -1);
        return AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(pc =>
            {
                var tasks = stages.Select((s, i) =>
                {
                    var t = pc.AddTask(Markup.Escape($"{i + 1}. {s.Name}" + (Done(i) ? " (done earlier)" : "")), autoStart: i == firstOpen, maxValue: Math.Max(1, s.Steps));
                    if (Done(i)) t.Value = t.MaxValue;
                    return t;
                }).ToArray();
                return body(new Sync(p =>
                {
                    if (p.StageIndex >= tasks.Length) return;
                    for (int i = 0; i < p.StageIndex; i++) tasks[i].Value = tasks[i].MaxValue;
                    var t = tasks[p.StageIndex];
                    if (!t.IsStarted) t.StartTask();
                    if (p.StageSteps > 0 && p.StageSteps != (long)t.MaxValue) t.MaxValue = p.StageSteps;
                    t.Value = p.Step;
                    t.Description = Markup.Escape(Describe(p, p.StageIndex + 1));
                }));
            });
    }

    /// <summary>The short status of one report: step, loss, reward (LoopRPT), mean exit step, tokens/s, ETA.</summary>
    public static string Describe(TrainingProgress p, int ordinal)
    {
        var s = string.Create(C, $"{ordinal}. {p.Stage} {p.Step}/{p.StageSteps} loss={p.Loss:F4}");
        if (p.Metrics.TryGetValue("reward_mean", out var r)) s += string.Create(C, $" reward={r[0]:F4}");
        if (p.MeanExitStep is { } e) s += string.Create(C, $" exit={e:F2}");
        else if (p.Metrics.TryGetValue("student_exit_step", out var se)) s += string.Create(C, $" exit={se[0]:F2}");
        return s + string.Create(C, $" tok/s={p.TokensPerSecond:F0} eta={p.Eta:hh\\:mm\\:ss}");
    }

    /// <summary>Synchronous <see cref="IProgress{T}"/> (System.Progress posts to a thread pool; reports must stay in order).</summary>
    private sealed class Sync(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
