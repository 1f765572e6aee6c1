using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Tensor arithmetic for per-step and per-token code with no implicit TorchSharp <see cref="Scalar"/>. A Scalar that
/// C# converts implicitly for one call (<c>t * 0.5</c>, <c>t + eps</c>, <c>arange(0, n)</c>) or that TorchSharp creates
/// inside a convenience overload (<c>a + b</c> and <c>add_(x)</c> pass an alpha of 1, <c>square()</c> passes an
/// exponent of 2) is unreachable once its handle is read, so the garbage collector can finalize it while libtorch
/// still reads it: "Unknown scalar type" or "Expected false to be true ... toFloat at c10/core/Scalar.h" under load
/// (docs/platform.md §2). Every Scalar here is either a static constant, alive for the process and never disposed, or
/// a <c>using</c> local disposed after the native call returns. <c>tests/LoopRpt.Tests/Native</c> scans the compiled
/// core for implicit Scalars on these paths.
/// </summary>
internal static class HeldScalars
{
    /// <summary>1 as an integer Scalar: a valid alpha for every numeric dtype (integer tensors refuse a float alpha).</summary>
    internal static readonly Scalar One = 1L.ToScalar();

    /// <summary>0 as an integer Scalar.</summary>
    internal static readonly Scalar Zero = 0L.ToScalar();

    /// <summary>Negative infinity: the additive mask of a position that no query may see.</summary>
    internal static readonly Scalar NegativeInfinity = double.NegativeInfinity.ToScalar();

    /// <summary>Runs <paramref name="op"/> on a Scalar that lives until it returns, then disposes the Scalar.</summary>
    private static Tensor With(Scalar scalar, Func<Scalar, Tensor> op)
    {
        using (scalar) return op(scalar);
    }

    /// <summary>a + b with a held alpha.</summary>
    internal static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a += b in place, with a held alpha.</summary>
    internal static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary>a + value.</summary>
    internal static Tensor Plus(this Tensor a, double value) => With(value.ToScalar(), s => a.add(s, One));

    /// <summary>a + value, keeping an integer tensor integer.</summary>
    internal static Tensor Plus(this Tensor a, long value) => With(value.ToScalar(), s => a.add(s, One));

    /// <summary>a * value, keeping an integer tensor integer.</summary>
    internal static Tensor Times(this Tensor a, long value) => With(value.ToScalar(), s => a.mul(s));

    /// <summary>a / value.</summary>
    internal static Tensor DividedBy(this Tensor a, double value) => With(value.ToScalar(), s => a.div(s));

    /// <summary>a &lt; value, elementwise.</summary>
    internal static Tensor LessThan(this Tensor a, double value) => With(value.ToScalar(), s => a.lt(s));

    /// <summary>a &gt; value, elementwise.</summary>
    internal static Tensor GreaterThan(this Tensor a, double value) => With(value.ToScalar(), s => a.gt(s));

    /// <summary>a &gt;= value, elementwise.</summary>
    internal static Tensor AtLeast(this Tensor a, long value) => With(value.ToScalar(), s => a.ge(s));

    /// <summary>a &gt;= value, elementwise.</summary>
    internal static Tensor AtLeast(this Tensor a, double value) => With(value.ToScalar(), s => a.ge(s));

    /// <summary>Sets a[index] = value in place along the first axis.</summary>
    internal static Tensor IndexFill(this Tensor a, Tensor index, long value) => With(value.ToScalar(), s => a.index_fill_(0, index, s));

    /// <summary>a with every element below <paramref name="min"/> raised to it.</summary>
    internal static Tensor ClampMin(this Tensor a, long min) => With(min.ToScalar(), s => a.clamp_min(s));

    /// <summary>a with every element below <paramref name="min"/> raised to it.</summary>
    internal static Tensor ClampMin(this Tensor a, double min) => With(min.ToScalar(), s => a.clamp_min(s));

    /// <summary>a with the elements where <paramref name="mask"/> is true set to <paramref name="value"/>.</summary>
    internal static Tensor MaskedFill(this Tensor a, Tensor mask, long value) => With(value.ToScalar(), s => a.masked_fill(mask, s));

    /// <summary>start, start + 1, ..., end - 1.</summary>
    internal static Tensor Arange(long start, long end, ScalarType dtype, Device? device)
    {
        using var s = start.ToScalar();
        using var e = end.ToScalar();
        return arange(s, e, One, dtype, device);
    }

    /// <summary>A tensor of <paramref name="shape"/> filled with an integer.</summary>
    internal static Tensor Full(long[] shape, long value, ScalarType dtype, Device? device) => With(value.ToScalar(), s => full(shape, s, dtype, device));

    /// <summary>A tensor of <paramref name="shape"/> filled with a real number.</summary>
    internal static Tensor Full(long[] shape, double value, ScalarType dtype, Device? device) => With(value.ToScalar(), s => full(shape, s, dtype, device));
}
