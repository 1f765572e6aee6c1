namespace LoopRpt.Tests;

/// <summary>
/// Float comparison for values computed by different shapes, batchings or processes (batched vs row-by-row scoring,
/// a reloaded model in a fresh process). CPU GEMM kernels pick their blocking and instruction set by shape and by
/// processor (AVX-512 on one machine, AVX2 on another), so the same sum can be rounded differently in the last bits:
/// bitwise equality across shapes is not a property of the code, and a bitwise test passes on one machine and fails on
/// the next. Where the computation is identical (save → load with the same batch, resume = straight run) tests stay
/// bitwise. |actual − expected| ≤ Absolute + Relative·|expected|, as in torch.allclose.
/// </summary>
internal static class Tolerance
{
    public const double Relative = 1e-5;
    public const double Absolute = 1e-5;

    public static bool Close(double expected, double actual)
        => expected.Equals(actual) || Math.Abs(actual - expected) <= Absolute + Relative * Math.Abs(expected);

    public static void AssertClose(double expected, double actual, string? what = null)
        => Assert.True(Close(expected, actual), $"{what}{(what is null ? "" : ": ")}expected {expected:R}, actual {actual:R} (rtol {Relative}, atol {Absolute})");

    public static void AssertClose(IReadOnlyList<float> expected, IReadOnlyList<float> actual, string? what = null)
    {
        Assert.True(expected.Count == actual.Count, $"{what}{(what is null ? "" : ": ")}length {actual.Count}, expected {expected.Count}");
        for (int i = 0; i < expected.Count; i++) AssertClose(expected[i], actual[i], $"{what}[{i}]");
    }
}
