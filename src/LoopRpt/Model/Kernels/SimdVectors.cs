using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoopRpt.Model.Kernels;

/// <summary>
/// The few vector operations the decode kernel needs, over one vector width. The kernel is generic over this interface
/// (<see cref="Vec512"/>, <see cref="Vec256"/>): the JIT compiles one copy per width, with these calls inlined, and the
/// width is chosen at run time (<see cref="FewRowsKernel.BestIsa"/>). Both widths use the portable
/// <c>Vector512</c>/<c>Vector256</c> API, so each runs on any x86-64 CPU (emulated, slowly, where the hardware lacks it):
/// that is how the tests run the AVX-512 path on an AVX2 machine.
/// </summary>
internal unsafe interface ISimd<TV> where TV : struct
{
    /// <summary>float32 lanes per vector.</summary>
    static abstract int Count { get; }

    static abstract TV Zero { get; }

    static abstract TV Load(float* p);

    /// <summary>a·b + c, fused.</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);

    /// <summary>
    /// 2·Count bfloat16 values at p, widened: the even-indexed ones (p[0], p[2], ...) and the odd-indexed ones. A bfloat16
    /// is the high half of a float32, so the pair read as one 32-bit lane gives the odd value by masking the low half
    /// and the even one by shifting it up 16 bits: two instructions, no lane crossing. The kernel pairs them with x
    /// packed the same way (<see cref="FewRowsKernel"/>).
    /// </summary>
    static abstract (TV Even, TV Odd) Widen(ushort* p);

    static abstract TV Add(TV a, TV b);

    static abstract float Sum(TV v);
}

/// <summary>512-bit vectors (16 float32): AVX-512 where <c>Vector512.IsHardwareAccelerated</c>.</summary>
internal readonly unsafe struct Vec512 : ISimd<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Even, Vector512<float> Odd) Widen(ushort* p)
    {
        var pairs = Vector512.Load((uint*)p);
        return (Vector512.ShiftLeft(pairs, 16).AsSingle(), (pairs & Vector512.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Vector512.Sum(v);
}

/// <summary>256-bit vectors (8 float32): AVX2 and FMA.</summary>
internal readonly unsafe struct Vec256 : ISimd<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Vector256.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector256<float> Even, Vector256<float> Odd) Widen(ushort* p)
    {
        var pairs = Vector256.Load((uint*)p);
        return (Vector256.ShiftLeft(pairs, 16).AsSingle(), (pairs & Vector256.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v) => Vector256.Sum(v);
}
