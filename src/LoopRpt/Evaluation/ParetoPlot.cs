using System.Globalization;
using System.Text;

namespace LoopRpt.Evaluation;

/// <summary>
/// The Pareto figure of docs/method.md §5 as a dependency-free SVG: one panel per bucket, accuracy against mean exit
/// steps; per model a solid line through the Q-exit sweep (q ascending) and a dashed line through the fixed steps s1..sT.
/// </summary>
public static class ParetoPlot
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private static readonly string[] Palette = SvgChart.Palette;
    private const double PanelW = 380, PanelH = 280, Left = 58, Right = 16, Top = 30, Bottom = 44;

    /// <summary>The SVG text for the given models; <paramref name="buckets"/> defaults to All, Easy, Medium, Hard.</summary>
    public static string ToSvg(IReadOnlyList<LoopEvaluation> evaluations, string title, IReadOnlyList<string>? buckets = null)
    {
        if (evaluations.Count == 0) throw new ArgumentException("The plot needs at least one evaluation.", nameof(evaluations));
        var names = buckets ?? LoopEvaluator.BucketNames;
        int cols = Math.Min(2, names.Count), rows = (names.Count + cols - 1) / cols;
        double header = 58, width = cols * PanelW, height = header + rows * PanelH;
        var sb = SvgChart.Begin(width, height, title);
        // Legend: model colours, then the line styles.
        double lx = 12;
        for (int m = 0; m < evaluations.Count; m++)
        {
            var color = Palette[m % Palette.Length];
            sb.Append(C, $"<line x1=\"{lx}\" y1=\"36\" x2=\"{lx + 22}\" y2=\"36\" stroke=\"{color}\" stroke-width=\"2\"/><circle cx=\"{lx + 11}\" cy=\"36\" r=\"3\" fill=\"{color}\"/>");
            sb.Append(C, $"<text x=\"{lx + 27}\" y=\"40\">{Esc(evaluations[m].Name)}</text>\n");
            lx += 40 + 6.5 * evaluations[m].Name.Length;
        }
        sb.Append(C, $"<text x=\"12\" y=\"53\" fill=\"#555\">solid: Q-exit sweep over q (mean exit step = compute spent) · dashed: fixed exit at s1..s{evaluations[0].Steps}</text>\n");

        for (int i = 0; i < names.Count; i++)
        {
            double ox = (i % cols) * PanelW, oy = header + (i / cols) * PanelH;
            Panel(sb, evaluations, names[i], ox, oy);
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    /// <summary>Writes <see cref="ToSvg"/> to <paramref name="path"/> (directories created).</summary>
    public static void WriteSvg(string path, IReadOnlyList<LoopEvaluation> evaluations, string title, IReadOnlyList<string>? buckets = null)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, ToSvg(evaluations, title, buckets));
    }

    private static void Panel(StringBuilder sb, IReadOnlyList<LoopEvaluation> evals, string bucket, double ox, double oy)
    {
        int T = evals.Max(e => e.Steps);
        var all = evals.SelectMany(e => e[bucket].StepAccuracy.Concat(e[bucket].QExit.Select(p => p.Accuracy))).Where(double.IsFinite).ToList();
        double x0 = ox + Left, x1 = ox + PanelW - Right, y0 = oy + PanelH - Bottom, y1 = oy + Top;
        var b0 = evals[0][bucket];
        string label = string.Format(C, "{0} (n={1})", b0.Name == "All" ? "All tokens" : b0.Label, b0.Tokens);
        sb.Append(C, $"<text x=\"{(x0 + x1) / 2}\" y=\"{oy + 18}\" text-anchor=\"middle\" font-weight=\"bold\">{Esc(label)}</text>\n");
        sb.Append(C, $"<rect x=\"{x0}\" y=\"{y1}\" width=\"{x1 - x0}\" height=\"{y0 - y1}\" fill=\"none\" stroke=\"#333\"/>\n");
        if (all.Count == 0)
        {
            sb.Append(C, $"<text x=\"{(x0 + x1) / 2}\" y=\"{(y0 + y1) / 2}\" text-anchor=\"middle\" fill=\"#777\">no tokens</text>\n");
            return;
        }
        var (X, Y) = SvgChart.Axes(sb, ox, x0, x1, y0, y1, T, all);

        for (int m = 0; m < evals.Count; m++)
        {
            var color = Palette[m % Palette.Length];
            var b = evals[m][bucket];
            var fixedPts = b.StepAccuracy.Select((a, t) => (X: X(t + 1), Y: Y(a))).Where(p => double.IsFinite(p.Y)).ToList();
            sb.Append(C, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\" opacity=\"0.7\" points=\"{Points(fixedPts)}\"/>\n");
            var q = b.QExit.Where(p => double.IsFinite(p.Accuracy)).OrderBy(p => p.MeanExitStep).ThenBy(p => p.Q).Select(p => (X: X(p.MeanExitStep), Y: Y(p.Accuracy), p.Q)).ToList();
            sb.Append(C, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{Points(q.Select(p => (p.X, p.Y)))}\"/>\n");
            foreach (var p in q)
                sb.Append(C, $"<circle cx=\"{p.X:F1}\" cy=\"{p.Y:F1}\" r=\"2.6\" fill=\"{color}\"><title>{Esc(evals[m].Name)} q={p.Q:0.###}</title></circle>\n");
        }
    }

    private static string Esc(string s) => SvgChart.Esc(s);

    private static string Points(IEnumerable<(double X, double Y)> pts) => SvgChart.Points(pts);
}
