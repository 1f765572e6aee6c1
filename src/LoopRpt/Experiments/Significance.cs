namespace LoopRpt.Experiments;

/// <summary>
/// The tests behind the experiment's verdicts and premise check (docs/experiment.md §4.3): Student's t
/// and the normal distribution's tails, and Holm's step-down correction for a family of tests.
/// </summary>
public static class Significance
{
    /// <summary>
    /// Two-sided p-value of the one-sample t-test that the mean of <paramref name="d"/> is 0 (t = mean / (std / √n), n − 1
    /// degrees of freedom); NaN for fewer than two values or an undefined mean; 0 when every value is the same non-zero number.
    /// </summary>
    public static double TwoSidedP(MeanStd d)
    {
        if (!d.IsDefined || d.Count < 2 || !double.IsFinite(d.Std)) return double.NaN;
        if (d.Std == 0) return d.Mean == 0 ? 1 : 0;
        double t = d.Mean / (d.Std / Math.Sqrt(d.Count));
        return StudentTTwoSidedTail(Math.Abs(t), d.Count - 1);
    }

    /// <summary>One-sided p-value that the mean of <paramref name="d"/> is above 0 (the t-test of <see cref="TwoSidedP"/>).</summary>
    public static double GreaterP(MeanStd d)
    {
        double two = TwoSidedP(d);
        if (double.IsNaN(two)) return double.NaN;
        return d.Mean > 0 ? two / 2 : 1 - two / 2;
    }

    /// <summary>P(|T| ≥ <paramref name="t"/>) for Student's t with <paramref name="df"/> degrees of freedom: I_{df/(df+t²)}(df/2, 1/2).</summary>
    public static double StudentTTwoSidedTail(double t, double df)
    {
        if (!(df > 0)) throw new ArgumentOutOfRangeException(nameof(df), df, "Degrees of freedom must be positive.");
        if (double.IsNaN(t)) return double.NaN;
        t = Math.Abs(t);
        if (double.IsPositiveInfinity(t)) return 0;
        return RegularizedIncompleteBeta(df / 2, 0.5, df / (df + t * t));
    }

    /// <summary>P(Z ≥ <paramref name="z"/>) for a standard normal Z.</summary>
    public static double NormalUpperTail(double z) => 0.5 * Erfc(z / Math.Sqrt(2));

    /// <summary>
    /// Holm's step-down adjusted p-values, in the input order: sort the m defined p-values ascending, multiply the i-th
    /// smallest by m − i + 1 (capped at 1), and take the running maximum. Rejecting where the adjusted value is below α keeps
    /// the family-wise error rate at α. NaN entries stay NaN and do not count in m.
    /// </summary>
    public static IReadOnlyList<double> Holm(IReadOnlyList<double> pValues)
    {
        ArgumentNullException.ThrowIfNull(pValues);
        var order = Enumerable.Range(0, pValues.Count).Where(i => !double.IsNaN(pValues[i])).OrderBy(i => pValues[i]).ToArray();
        var adjusted = Enumerable.Repeat(double.NaN, pValues.Count).ToArray();
        double running = 0;
        for (int r = 0; r < order.Length; r++)
        {
            running = Math.Max(running, Math.Min(1, (order.Length - r) * pValues[order[r]]));
            adjusted[order[r]] = running;
        }
        return adjusted;
    }

    /// <summary>The complementary error function (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).</summary>
    private static double Erfc(double x)
    {
        double z = Math.Abs(x), t = 1 / (1 + 0.5 * z);
        double r = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
                   + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? r : 2 - r;
    }

    /// <summary>I_x(a, b) by its continued fraction (Numerical Recipes §6.4).</summary>
    private static double RegularizedIncompleteBeta(double a, double b, double x)
    {
        if (x <= 0) return 0;
        if (x >= 1) return 1;
        double front = Math.Exp(LogGamma(a + b) - LogGamma(a) - LogGamma(b) + a * Math.Log(x) + b * Math.Log(1 - x));
        return x < (a + 1) / (a + b + 2) ? front * BetaFraction(a, b, x) / a : 1 - front * BetaFraction(b, a, 1 - x) / b;
    }

    private static double BetaFraction(double a, double b, double x)
    {
        const double tiny = 1e-300;
        double qab = a + b, qap = a + 1, qam = a - 1, c = 1, d = 1 - qab * x / qap;
        d = 1 / (Math.Abs(d) < tiny ? tiny : d);
        double h = d;
        for (int m = 1; m <= 300; m++)
        {
            int m2 = 2 * m;
            double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
            d = 1 / (Math.Abs(1 + aa * d) < tiny ? tiny : 1 + aa * d);
            c = 1 + aa / c;
            if (Math.Abs(c) < tiny) c = tiny;
            h *= d * c;
            aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
            d = 1 / (Math.Abs(1 + aa * d) < tiny ? tiny : 1 + aa * d);
            c = 1 + aa / c;
            if (Math.Abs(c) < tiny) c = tiny;
            double del = d * c;
            h *= del;
            if (Math.Abs(del - 1) < 1e-15) break;
        }
        return h;
    }

    /// <summary>ln Γ(x) for x &gt; 0 (Lanczos, g = 7).</summary>
    private static double LogGamma(double x)
    {
        double[] g = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
                      12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double a = g[0], t = x + 7.5;
        for (int i = 1; i < 9; i++) a += g[i] / (x + i);
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(a);
    }
}
