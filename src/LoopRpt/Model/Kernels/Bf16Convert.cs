using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoopRpt.Model.Kernels;

/// <summary>
/// bfloat16 ↔ float32 on raw memory, for the decode kernels: a decoding step's bfloat16 inputs are widened and its
/// outputs rounded by the kernel's own workers, on the slice each one computed, instead of by two libtorch conversions
/// per product (each a dispatch and, at 2 threads, a wake of libtorch's OpenMP worker: docs/benchmarks.md, "Issue 28,
/// fifth round"). The results are libtorch's: widening is exact, and rounding is round-to-nearest-even as in
/// c10::BFloat16, every NaN becoming the quiet NaN 0x7FC0 (libtorch's vectorized conversion gives 0xFFFF, its scalar
/// one 0x7FC0).
/// </summary>
internal static unsafe class Bf16Convert
{
    /// <summary>n bfloat16 values at src → float32 at dst (exact: a bfloat16 is the high half of a float32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call
    public static void Widen(ushort* src, float* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                var v = Vector256.Load(src + i);
                Vector256.ShiftLeft(Vector256.WidenLower(v), 16).AsSingle().Store(dst + i);
                Vector256.ShiftLeft(Vector256.WidenUpper(v), 16).AsSingle().Store(dst + i + 8);
            }
        for (; i < n; i++) dst[i] = Widen(src[i]);
    }

    /// <summary>n float32 values at src → bfloat16 at dst, rounded to nearest, ties to even; a NaN → 0x7FC0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Narrow(float* src, ushort* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var one = Vector256.Create(1u);
            var half = Vector256.Create(0x7FFFu);
            var nan = Vector256.Create(0x7FC0u);
            for (; i + 16 <= n; i += 16)
            {
                var lo = Round(Vector256.Load(src + i), one, half, nan);
                var hi = Round(Vector256.Load(src + i + 8), one, half, nan);
                Vector256.Narrow(lo, hi).Store(dst + i);
            }
        }
        for (; i < n; i++) dst[i] = Narrow(src[i]);
    }

    /// <summary><see cref="Widen(ushort*, float*, long)"/> on spans (tests).</summary>
    internal static void Widen(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("Expected room for every value.", nameof(dst));
        fixed (ushort* s = src)
        fixed (float* d = dst)
            Widen(s, d, src.Length);
    }

    /// <summary><see cref="Narrow(float*, ushort*, long)"/> on spans (tests).</summary>
    internal static void Narrow(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("Expected room for every value.", nameof(dst));
        fixed (float* s = src)
        fixed (ushort* d = dst)
            Narrow(s, d, src.Length);
    }

    /// <summary>One bfloat16 value widened.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>One float32 rounded to bfloat16 bits (c10::BFloat16's rule).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Narrow(float value)
    {
        if (float.IsNaN(value)) return 0x7FC0;
        uint u = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }

    // Eight float32 → their bfloat16 bits in the low halves of uint lanes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Round(Vector256<float> f, Vector256<uint> one, Vector256<uint> half, Vector256<uint> nan)
    {
        var u = f.AsUInt32();
        var rounded = Vector256.ShiftRightLogical(u + half + (Vector256.ShiftRightLogical(u, 16) & one), 16);
        return Vector256.ConditionalSelect(Vector256.Equals(f, f).AsUInt32(), rounded, nan);
    }
}
