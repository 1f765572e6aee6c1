using System.Globalization;
using System.Security;
using System.Text;

namespace LoopRpt.Evaluation;

/// <summary>Pieces shared by the SVG figures: palette, escaping, and the accuracy-vs-exit-step axes of one panel.</summary>
internal static class SvgChart
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

    /// <summary>
    /// Draws the grid of a panel whose plot area is [x0, x1] × [y1, y0] (SVG y grows downwards): x ticks at loop steps
    /// 1..T, y ticks in percent on a rounded range around <paramref name="accuracies"/> (fractions), and the axis titles.
    /// Returns the maps from (mean exit step, accuracy fraction) to SVG coordinates.
    /// </summary>
    public static (Func<double, double> X, Func<double, double> Y) Axes(StringBuilder sb, double ox, double x0, double x1, double y0, double y1, int T, IReadOnlyCollection<double> accuracies)
    {
        double lo = 100 * accuracies.Min(), hi = 100 * accuracies.Max();
        double span = Math.Max(hi - lo, 1.0);
        double step = NiceStep(span / 4);
        lo = Math.Floor((lo - 0.05 * span) / step) * step;
        hi = Math.Ceiling((hi + 0.05 * span) / step) * step;
        double X(double s) => x0 + (s - 1) / Math.Max(T - 1, 1) * (x1 - x0);
        double Y(double acc) => y0 - (100 * acc - lo) / (hi - lo) * (y0 - y1);

        for (int s = 1; s <= T; s++)
        {
            double x = X(s);
            sb.Append(C, $"<line x1=\"{x:F1}\" y1=\"{y0}\" x2=\"{x:F1}\" y2=\"{y1}\" stroke=\"#eee\"/><text x=\"{x:F1}\" y=\"{y0 + 14}\" text-anchor=\"middle\">{s}</text>\n");
        }
        for (double v = lo; v <= hi + 1e-9; v += step)
        {
            double y = y0 - (v - lo) / (hi - lo) * (y0 - y1);
            sb.Append(C, $"<line x1=\"{x0}\" y1=\"{y:F1}\" x2=\"{x1}\" y2=\"{y:F1}\" stroke=\"#eee\"/><text x=\"{x0 - 5}\" y=\"{y + 4:F1}\" text-anchor=\"end\">{v.ToString(step < 1 ? "F1" : "F0", C)}</text>\n");
        }
        sb.Append(C, $"<text x=\"{(x0 + x1) / 2}\" y=\"{y0 + 32}\" text-anchor=\"middle\">mean exit step</text>\n");
        sb.Append(C, $"<text x=\"{ox + 14}\" y=\"{(y0 + y1) / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 {ox + 14} {(y0 + y1) / 2})\">accuracy (%)</text>\n");
        return (X, Y);
    }

    public static string Points(IEnumerable<(double X, double Y)> pts) => string.Join(" ", pts.Select(p => string.Format(C, "{0:F1},{1:F1}", p.X, p.Y)));

    public static double NiceStep(double raw)
    {
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double f = raw / mag;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    }

    /// <summary>Opens an SVG document of the given size: white background and a centred bold title.</summary>
    public static StringBuilder Begin(double width, double height, string title)
    {
        var sb = new StringBuilder();
        sb.Append(C, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n");
        sb.Append(C, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        sb.Append(C, $"<text x=\"{width / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{Esc(title)}</text>\n");
        return sb;
    }

    public static string Esc(string s) => SecurityElement.Escape(s) ?? "";
}
