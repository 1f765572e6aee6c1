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
/// Shows <see cref="TrainingProgress"/> reports: a live <see cref="ProgressBoard"/> on a terminal (one bar per stage with
/// its numbers, laid out for the terminal's width), or plain <c>progress stage=... step=... loss=...</c> lines
/// (<see cref="TrainingProgress.ToString"/> plus <see cref="TrainingMonitor.PlainSuffix"/>) when redirected, so logs stay
/// parseable. Either way a <see cref="TrainingMonitor"/> follows the run: a throughput collapse is reported (a warning on
/// standard error, <c>slowdown=</c> on the progress line, SLOW on the board), and the caller prints its stage summaries.
/// </summary>
internal static class TrainingDisplay
{
    /// <summary>
    /// Runs <paramref name="body"/> with a progress sink for <paramref name="stages"/> (one bar each when live). Entries
    /// marked in <paramref name="completed"/> start full (e.g. experiment runs done earlier); a report whose
    /// <see cref="TrainingProgress.StageSteps"/> differs from the announced steps resizes its bar (steps known late).
    /// <paramref name="monitor"/> (created when null) collects what the summaries print.
    /// </summary>
    public static T Run<T>(CliContext ctx, ProgressMode mode, IReadOnlyList<(string Name, long Steps)> stages, Func<IProgress<TrainingProgress>?, T> body,
                           IReadOnlyList<bool>? completed = null, TrainingMonitor? monitor = null)
    {
        monitor ??= new TrainingMonitor(stages, completed);
        bool live = mode is ProgressMode.Auto or ProgressMode.Live && ctx.Interactive && AnsiConsole.Profile.Capabilities.Interactive;
        if (!live)
        {
            if (mode == ProgressMode.None) return body(new Sync(p => monitor.Report(p)));
            return body(new Sync(p =>
            {
                var warning = monitor.Report(p);
                ctx.Output.WriteLine("progress " + p + monitor.PlainSuffix(p));
                if (warning is not null) ctx.Error.WriteLine(warning);
            }));
        }
        var board = new ProgressBoard(monitor);
        var warnings = new List<string>();
        var result = AnsiConsole.Live(board).AutoClear(false).Overflow(VerticalOverflow.Crop).Cropping(VerticalOverflowCropping.Bottom).Start(live =>
        {
            // The clocks tick between reports (a LoopRPT step or an evaluation can take a while); renders take the monitor's lock.
            var stop = new object();
            bool stopped = false;
            using var timer = new Timer(_ => { lock (stop) if (!stopped) live.Refresh(); }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
            try
            {
                return body(new Sync(p =>
                {
                    if (monitor.Report(p) is { } w) warnings.Add(w);
                    live.Refresh();
                }));
            }
            finally
            {
                lock (stop) stopped = true;
                live.Refresh();
            }
        });
        foreach (var w in warnings) ctx.Error.WriteLine(w);       // held back while the live display ran
        return result;
    }

    /// <summary>Synchronous <see cref="IProgress{T}"/> (System.Progress posts to a thread pool; reports must stay in order).</summary>
    private sealed class Sync(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
