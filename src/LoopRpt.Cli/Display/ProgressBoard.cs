using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace LoopRpt.Cli.Display;

/// <summary>
/// The live training display, laid out for the width it is given (80 columns, or narrower) rather than left to a grid
/// that wraps: per stage one line with name, bar, steps, percentage and times, and for a stage that has reported a
/// second line with its numbers (objective, LM loss, exit step, tokens/s; what does not fit is left out, never wrapped).
/// Finished stages keep their final time. When the stages do not fit the console's height, finished and waiting ones
/// fold into one line each.
/// </summary>
internal sealed class ProgressBoard(TrainingMonitor monitor) : Renderable
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>Narrowest bar drawn; below it the times, then the percentage move out of the bar line.</summary>
    private const int MinBar = 8;

    /// <summary>One styled line; <see cref="Text"/> never exceeds the width it was laid out for.</summary>
    internal readonly record struct Line(IReadOnlyList<(string Text, Style Style)> Parts)
    {
        public string Text => string.Concat(Parts.Select(p => p.Text));
    }

    protected override Measurement Measure(RenderOptions options, int maxWidth) => new(Math.Min(maxWidth, 20), maxWidth);

    protected override IEnumerable<Segment> Render(RenderOptions options, int maxWidth)
    {
        int? height = options.Height ?? (options.ConsoleSize.Height > 0 ? options.ConsoleSize.Height : null);
        foreach (var line in Lines(maxWidth, height is { } h ? Math.Max(3, h - 1) : null))
        {
            foreach (var (text, style) in line.Parts)
                if (text.Length > 0) yield return new Segment(text, style);
            yield return Segment.LineBreak;
        }
    }

    /// <summary>The display as lines of at most <paramref name="width"/> cells, and at most <paramref name="height"/> lines.</summary>
    internal IReadOnlyList<Line> Lines(int width, int? height = null)
    {
        width = Math.Max(20, width);
        lock (monitor.Sync)
        {
            var stages = monitor.Stages;
            var times = stages.Select(Time).ToArray();
            int nameWidth = Math.Min(stages.Select((s, i) => Label(s, i).Length).DefaultIfEmpty(8).Max(), Math.Max(10, width * 2 / 5));
            int countWidth = stages.Select(s => $"{s.Steps}/{s.Steps}".Length).DefaultIfEmpty(3).Max();
            // At least "m:ss eta m:ss", so the bars keep their length from frame to frame.
            int timeWidth = Math.Max(times.Select(t => t.Length).DefaultIfEmpty(0).Max(), 13);

            // Fixed parts first; the bar takes the rest. Narrow: times move to the numbers line, then the percentage goes.
            bool showTime = true, showPct = true;
            int Bar() => width - nameWidth - 1 - countWidth - (showPct ? 5 : 0) - (showTime ? timeWidth + 1 : 0) - 1;
            if (Bar() < MinBar) showTime = false;
            if (Bar() < MinBar) showPct = false;
            int barWidth = Math.Max(3, Bar());

            var blocks = new List<(StageView Stage, List<Line> Lines)>();
            for (int i = 0; i < stages.Count; i++)
            {
                var s = stages[i];
                var lines = new List<Line> { StageLine(s, i, nameWidth, barWidth, countWidth, showPct, showTime ? times[i].PadLeft(timeWidth) : null, width) };
                if (s.Last is not null)
                    lines.Add(NumbersLine(s, showTime ? null : times[i], width));
                blocks.Add((s, lines));
            }
            return Fit(blocks, height, width);
        }
    }

    private static string Label(StageView s, int i) => $"{i + 1}. {s.Name}";

    private string Time(StageView s)
    {
        if (s.DoneEarlier) return "done earlier";
        if (!s.Started) return "waiting";
        var elapsed = Clock(monitor.Elapsed(s));
        if (s.Finished) return $"{elapsed} done";
        return monitor.Remaining(s) is { } left ? $"{elapsed} eta {Clock(left)}" : elapsed;
    }

    /// <summary>m:ss, or h:mm:ss from an hour on.</summary>
    internal static string Clock(TimeSpan t)
        => t.TotalHours >= 1 ? string.Create(C, $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}") : string.Create(C, $"{t.Minutes}:{t.Seconds:00}");

    private static Line StageLine(StageView s, int index, int nameWidth, int barWidth, int countWidth, bool pct, string? time, int width)
    {
        var name = Label(s, index);
        if (name.Length > nameWidth) name = name[..(nameWidth - 1)] + "…";
        double fraction = Math.Clamp((double)s.Step / Math.Max(1, s.Steps), 0, 1);
        int filled = (int)Math.Round(fraction * barWidth);
        var done = s.Finished || s.DoneEarlier;
        var parts = new List<(string, Style)>
        {
            (name.PadRight(nameWidth) + " ", s.Started || s.DoneEarlier ? Style.Plain : new Style(Color.Grey)),
            (new string('━', filled), new Style(done ? Color.Green : Color.Yellow)),
            (new string('━', barWidth - filled), new Style(Color.Grey23)),
            (" " + $"{s.Step}/{s.Steps}".PadLeft(countWidth), Style.Plain),
        };
        if (pct) parts.Add(($" {100 * fraction,3:F0}%", Style.Plain));
        if (time is not null) parts.Add((" " + time, new Style(Color.Grey)));
        return Clip(parts, width);
    }

    /// <summary>The stage's numbers, in order of importance; items that do not fit are left out.</summary>
    private static Line NumbersLine(StageView s, string? time, int width)
    {
        var p = s.Last!;
        var items = new List<(string Text, Style Style)>();
        if (s.SlowNow && s.Baseline > 0) items.Add((string.Create(C, $"SLOW {p.TokensPerSecond / s.Baseline:0.00}×"), new Style(Color.Yellow)));
        if (time is not null) items.Add((time, new Style(Color.Grey)));
        items.Add((string.Create(C, $"{TrainingMonitor.LossName(p)}={p.Loss:F4}"), Style.Plain));
        if (TrainingMonitor.LmLoss(p) is { } lm) items.Add((string.Create(C, $"lm_loss={lm:F4}"), Style.Plain));
        if (TrainingMonitor.ExitStep(p) is { } e) items.Add((string.Create(C, $"exit={e:F2}"), Style.Plain));
        double rate = s.Finished ? s.MeanRate : p.TokensPerSecond;
        items.Add((string.Create(C, $"tok/s={rate:F0}"), Style.Plain));
        double f = TrainingMonitor.ForwardPasses(p);
        if (f != 1) items.Add((string.Create(C, $"fwd/tok={f:0.#}"), new Style(Color.Grey)));
        if (p.Metrics.TryGetValue("reward_mean", out var r)) items.Add((string.Create(C, $"reward={r[0]:F4}"), Style.Plain));
        var parts = new List<(string, Style)> { ("   ", Style.Plain) };
        int used = 3;
        foreach (var (text, style) in items)
        {
            int need = (used > 3 ? 1 : 0) + text.Length;
            if (used + need > width) continue;       // left out; a shorter later item may still fit
            parts.Add(((used > 3 ? " " : "") + text, style));
            used += need;
        }
        return new Line(parts);
    }

    private static Line Clip(List<(string Text, Style Style)> parts, int width)
    {
        var clipped = new List<(string, Style)>();
        int used = 0;
        foreach (var (text, style) in parts)
        {
            if (used >= width) break;
            var t = text.Length <= width - used ? text : text[..(width - used)];
            clipped.Add((t, style));
            used += t.Length;
        }
        return new Line(clipped);
    }

    /// <summary>
    /// All blocks when they fit <paramref name="height"/>. Else finished stages lose their numbers line, oldest first, only
    /// as many as needed; if the stage lines alone are too many, the oldest finished and the last waiting stages fold into
    /// one line each ("3 finished: ...", "5 waiting: ..."), keeping the running stage whole and the display as tall as
    /// the height allows (a live display that shrinks leaves blank lines behind).
    /// </summary>
    private static IReadOnlyList<Line> Fit(List<(StageView Stage, List<Line> Lines)> blocks, int? height, int width)
    {
        List<Line> All() => blocks.SelectMany(b => b.Lines).ToList();
        if (height is not { } h || All().Count <= h) return All();
        static bool Done(StageView s) => s.Finished || s.DoneEarlier;
        foreach (var b in blocks.Where(b => Done(b.Stage) && b.Lines.Count > 1))
        {
            b.Lines.RemoveRange(1, b.Lines.Count - 1);
            if (All().Count <= h) return All();
        }

        var finished = blocks.Where(b => Done(b.Stage)).ToList();
        var waiting = blocks.Where(b => !b.Stage.Started && !b.Stage.DoneEarlier).ToList();
        var running = blocks.Where(b => b.Stage.Started && !Done(b.Stage)).ToList();
        int budget = h - running.Sum(b => b.Lines.Count);
        int Total(int f, int w) => f + w + (f < finished.Count ? 1 : 0) + (w < waiting.Count ? 1 : 0);
        int shownFinished = 0, shownWaiting = 0;
        for (bool grew = true; grew;)
        {
            grew = false;
            if (shownWaiting < waiting.Count && Total(shownFinished, shownWaiting + 1) <= budget) { shownWaiting++; grew = true; }
            if (shownFinished < finished.Count && Total(shownFinished + 1, shownWaiting) <= budget) { shownFinished++; grew = true; }
        }
        var lines = new List<Line>();
        var folded = finished.Take(finished.Count - shownFinished).ToList();
        if (folded.Count > 0)
            lines.Add(Clip([(string.Create(C, $"{folded.Count} finished: {string.Join(", ", folded.Select(b => b.Stage.Name))}"), new Style(Color.Green))], width));
        foreach (var b in finished.Skip(folded.Count)) lines.Add(b.Lines[0]);
        foreach (var b in running) lines.AddRange(b.Lines);
        foreach (var b in waiting.Take(shownWaiting)) lines.Add(b.Lines[0]);
        var later = waiting.Skip(shownWaiting).ToList();
        if (later.Count > 0)
            lines.Add(Clip([(string.Create(C, $"{later.Count} waiting: {string.Join(", ", later.Select(b => b.Stage.Name))}"), new Style(Color.Grey))], width));
        return lines.Count <= h ? lines : lines.Take(h).ToList();
    }
}
