using System.Globalization;
using System.Text;

namespace LoopRpt.Evaluation;

/// <summary>A point of a band: at mean exit step <paramref name="X"/>, accuracy <paramref name="Mean"/> ± <paramref name="Std"/> (fractions; NaN std: no band).</summary>
public sealed record BandPoint(double X, double Mean, double Std);

/// <summary>One model (or arm) in a band plot.</summary>
/// <param name="Name">Legend label.</param>
/// <param name="Curve">The Pareto curve, e.g. accuracy over seeds at matched mean exit steps: drawn as a solid line with a shaded ±1 std band.</param>
/// <param name="FixedSteps">Optional fixed-exit points s1..sT: a dashed line with ±1 std whiskers.</param>
public sealed record BandSeries(string Name, IReadOnlyList<BandPoint> Curve, IReadOnlyList<BandPoint>? FixedSteps = null);

/// <summary>One panel (e.g. one token bucket) of a band plot.</summary>
public sealed record BandPanel(string Title, IReadOnlyList<BandSeries> Series);

/// <summary>
/// The Pareto figure with seed bands, beside <see cref="ParetoPlot"/>: per panel, accuracy against mean exit steps, each
/// series a mean line with a shaded ±1 standard-deviation band over seeds. Dependency-free SVG.
/// </summary>
public static class ParetoBandPlot
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private const double PanelW = 420, PanelH = 300, Left = 58, Right = 16, Top = 30, Bottom = 44;

    /// <summary>The SVG text; <paramref name="steps"/> is the loop count T (the x axis runs 1..T).</summary>
    public static string ToSvg(IReadOnlyList<BandPanel> panels, string title, int steps, string? caption = null)
    {
        ArgumentNullException.ThrowIfNull(panels);
        if (panels.Count == 0) throw new ArgumentException("The plot needs at least one panel.", nameof(panels));
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "The loop count must be at least 1.");
        var names = panels.SelectMany(p => p.Series.Select(s => s.Name)).Distinct().ToList();
        int cols = Math.Min(2, panels.Count), rows = (panels.Count + cols - 1) / cols;
        double header = 58, width = cols * PanelW, height = header + rows * PanelH;
        var sb = SvgChart.Begin(width, height, title);
        double lx = 12;
        for (int m = 0; m < names.Count; m++)
        {
            var color = SvgChart.Palette[m % SvgChart.Palette.Length];
            sb.Append(C, $"<rect x=\"{lx}\" y=\"31\" width=\"22\" height=\"10\" fill=\"{color}\" opacity=\"0.2\"/><line x1=\"{lx}\" y1=\"36\" x2=\"{lx + 22}\" y2=\"36\" stroke=\"{color}\" stroke-width=\"2\"/>");
            sb.Append(C, $"<text x=\"{lx + 27}\" y=\"40\">{SvgChart.Esc(names[m])}</text>\n");
            lx += 40 + 6.5 * names[m].Length;
        }
        sb.Append(C, $"<text x=\"12\" y=\"53\" fill=\"#555\">{SvgChart.Esc(caption ?? "solid: mean over seeds, shaded: ±1 std · dashed: fixed exit at s1..sT")}</text>\n");
        for (int i = 0; i < panels.Count; i++)
            Panel(sb, panels[i], names, steps, (i % cols) * PanelW, header + (i / cols) * PanelH);
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    /// <summary>Writes <see cref="ToSvg"/> to <paramref name="path"/> (directories created).</summary>
    public static void WriteSvg(string path, IReadOnlyList<BandPanel> panels, string title, int steps, string? caption = null)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, ToSvg(panels, title, steps, caption));
    }

    private static void Panel(StringBuilder sb, BandPanel panel, List<string> names, int T, double ox, double oy)
    {
        double x0 = ox + Left, x1 = ox + PanelW - Right, y0 = oy + PanelH - Bottom, y1 = oy + Top;
        sb.Append(C, $"<text x=\"{(x0 + x1) / 2}\" y=\"{oy + 18}\" text-anchor=\"middle\" font-weight=\"bold\">{SvgChart.Esc(panel.Title)}</text>\n");
        sb.Append(C, $"<rect x=\"{x0}\" y=\"{y1}\" width=\"{x1 - x0}\" height=\"{y0 - y1}\" fill=\"none\" stroke=\"#333\"/>\n");
        static IEnumerable<BandPoint> Finite(IEnumerable<BandPoint>? pts) => (pts ?? []).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Mean));
        static IEnumerable<double> Extent(BandPoint p) => double.IsFinite(p.Std) ? [p.Mean - p.Std, p.Mean + p.Std] : [p.Mean];
        var values = panel.Series.SelectMany(s => Finite(s.Curve).Concat(Finite(s.FixedSteps))).SelectMany(Extent).ToList();
        if (values.Count == 0)
        {
            sb.Append(C, $"<text x=\"{(x0 + x1) / 2}\" y=\"{(y0 + y1) / 2}\" text-anchor=\"middle\" fill=\"#777\">no data</text>\n");
            return;
        }
        var (X, Y) = SvgChart.Axes(sb, ox, x0, x1, y0, y1, T, values);
        foreach (var s in panel.Series)
        {
            var color = SvgChart.Palette[names.IndexOf(s.Name) % SvgChart.Palette.Length];
            var curve = Finite(s.Curve).OrderBy(p => p.X).ToList();
            var band = curve.Where(p => double.IsFinite(p.Std)).ToList();
            if (band.Count >= 2)
            {
                var outline = band.Select(p => (X(p.X), Y(p.Mean + p.Std))).Concat(band.AsEnumerable().Reverse().Select(p => (X(p.X), Y(p.Mean - p.Std))));
                sb.Append(C, $"<polygon fill=\"{color}\" opacity=\"0.18\" stroke=\"none\" points=\"{SvgChart.Points(outline)}\"/>\n");
            }
            sb.Append(C, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{SvgChart.Points(curve.Select(p => (X(p.X), Y(p.Mean))))}\"/>\n");
            foreach (var p in curve)
                sb.Append(C, $"<circle cx=\"{X(p.X):F1}\" cy=\"{Y(p.Mean):F1}\" r=\"2.2\" fill=\"{color}\"><title>{SvgChart.Esc(s.Name)} exit {p.X:0.##}: {100 * p.Mean:F2} % ± {100 * p.Std:F2}</title></circle>\n");
            var fixedPts = Finite(s.FixedSteps).OrderBy(p => p.X).ToList();
            if (fixedPts.Count == 0) continue;
            sb.Append(C, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\" opacity=\"0.7\" points=\"{SvgChart.Points(fixedPts.Select(p => (X(p.X), Y(p.Mean))))}\"/>\n");
            foreach (var p in fixedPts.Where(p => double.IsFinite(p.Std)))
                sb.Append(C, $"<line x1=\"{X(p.X):F1}\" y1=\"{Y(p.Mean - p.Std):F1}\" x2=\"{X(p.X):F1}\" y2=\"{Y(p.Mean + p.Std):F1}\" stroke=\"{color}\" opacity=\"0.7\"/>\n");
        }
    }
}
