namespace LoopRpt.Tests;

/// <summary>
/// Float comparison for values computed by different shapes, batchings or processes (batched vs row-by-row scoring,
/// a reloaded model in a fresh process). CPU GEMM kernels pick their blocking and instruction set by shape and by
/// processor (AVX-512 on one machine, AVX2 on another), so the same sum can be rounded differently in the last bits:
/// bitwise equality across shapes is not a property of the code, and a bitwise test passes on one machine and fails on
/// the next. |actual − expected| ≤ Absolute + Relative·|expected|, as in torch.allclose.
/// <para>
/// The rule, enforced by CI (<c>.ci/float-equality</c>, a Roslyn scan of tests/ that runs before the tests): no
/// <c>Assert.Equal</c> / <c>Assert.NotEqual</c> compares float, double or Half values exactly — scalars, nullables,
/// arrays, collections, tuples, or structs and records holding them — and neither the decimal-places form
/// <c>Assert.Equal(x, y, precision)</c> nor xunit's <c>Assert.Equal(x, y, tolerance)</c> is used; nor
/// <c>Assert.True(a == b)</c> or <c>SequenceEqual</c> on floats. Floats from two computation paths go through this class.
/// The exception is an assertion whose two sides come from literally the same computation (save → load with the same
/// batch, resume = straight run, the same seed twice) or hold a value that is not computed at all (a setting read back,
/// a literal such as 0.25 that is exact in binary): it stays exact and carries the reason in a comment,
/// <c>// bitwise: save -> load reads the same bytes</c>, at the end of its line or directly above it (one such
/// comment covers the statements below it up to the next blank line, and everything inside a statement it heads).
/// </para>
/// <para>
/// Choosing a tolerance: the defaults (1e-5 relative and absolute) cover last-bit differences of float32 sums of up to
/// a few thousand terms. A test that needs another bound passes it explicitly with the reason beside it: a sum of n
/// float32 terms can differ by about n·2⁻²⁴·max|term| between summation orders, so large sums take a relative
/// bound; a quantity accumulated through training steps takes a looser one. The decimal-places asserts this class
/// replaced became <c>absolute: 1e-p</c> (the largest difference xunit's rounding let through), plus the relative part.
/// </para>
/// </summary>
internal static class Tolerance
{
    public const double Relative = 1e-5;
    public const double Absolute = 1e-5;

    public static bool Close(double expected, double actual, double relative = Relative, double absolute = Absolute)
        => expected.Equals(actual) || Math.Abs(actual - expected) <= absolute + relative * Math.Abs(expected);

    public static void AssertClose(double expected, double actual, string? what = null, double relative = Relative, double absolute = Absolute)
        => Assert.True(Close(expected, actual, relative, absolute),
            $"{what}{(what is null ? "" : ": ")}expected {expected:R}, actual {actual:R} (rtol {relative}, atol {absolute})");

    public static void AssertClose(IReadOnlyList<float> expected, IReadOnlyList<float> actual, string? what = null, double relative = Relative, double absolute = Absolute)
    {
        Assert.True(expected.Count == actual.Count, $"{what}{(what is null ? "" : ": ")}length {actual.Count}, expected {expected.Count}");
        for (int i = 0; i < expected.Count; i++) AssertClose(expected[i], actual[i], $"{what}[{i}]", relative, absolute);
    }

    public static void AssertClose(IReadOnlyList<double> expected, IReadOnlyList<double> actual, string? what = null, double relative = Relative, double absolute = Absolute)
    {
        Assert.True(expected.Count == actual.Count, $"{what}{(what is null ? "" : ": ")}length {actual.Count}, expected {expected.Count}");
        for (int i = 0; i < expected.Count; i++) AssertClose(expected[i], actual[i], $"{what}[{i}]", relative, absolute);
    }
}
