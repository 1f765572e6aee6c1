using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// y = x Wᵀ (+ b) for a few float32 rows and bfloat16 weights, on the CPU, with AVX2 and FMA: each weight is read as its
/// 2 stored bytes and widened in registers (a bfloat16 is the top half of a float32, so widening is a 16-bit shift),
/// products and sums are float32. Decoding reads every weight once per token, so halving the bytes read is what makes
/// bfloat16 storage faster than float32 on CPUs whose libtorch bfloat16 products are slow (no AVX-512 BF16).
/// </summary>
internal static unsafe class BFloat16Kernels
{
    /// <summary>True where the kernel can run (x86-64 with AVX2 and FMA).</summary>
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>x (rows, in) float32, weight (out, in) bfloat16, bias (out) bfloat16 or null → (rows, out) float32, all on the CPU.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("The bfloat16 kernel needs AVX2 and FMA.");
        if (x.dim() != 2 || weight.dim() != 2 || x.shape[1] != weight.shape[1])
            throw new ArgumentException($"Expected x (rows, in) and weight (out, in), got ({string.Join(", ", x.shape)}) and ({string.Join(", ", weight.shape)}).");
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.BFloat16 || (bias is not null && bias.dtype != ScalarType.BFloat16))
            throw new ArgumentException("Expected float32 x and bfloat16 weight and bias.");
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU)
            throw new ArgumentException("The bfloat16 kernel runs on CPU tensors only.");
        int rows = checked((int)x.shape[0]), inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        var xc = x.is_contiguous() ? x : x.contiguous();
        var wc = weight.is_contiguous() ? weight : weight.contiguous();
        var bc = bias is null || bias.is_contiguous() ? bias : bias.contiguous();
        try
        {
            var y = empty([rows, outF], ScalarType.Float32);   // (rows, out), in the caller's dispose scope
            Run((float*)DataPtr(xc), (ushort*)DataPtr(wc), bc is null ? null : (ushort*)DataPtr(bc), (float*)DataPtr(y),
                rows, inF, outF, Math.Max(1, get_num_threads()));
            return y;
        }
        finally
        {
            // Copies made here are ours to free; the caller's tensors are not.
            if (!ReferenceEquals(xc, x)) xc.Dispose();
            if (!ReferenceEquals(wc, weight)) wc.Dispose();
            if (bc is not null && !ReferenceEquals(bc, bias)) bc.Dispose();
        }
    }

    // The first element of a CPU tensor (libtorch's Tensor::data_ptr, exported by TorchSharp's native library).
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr handle);

    private static void* DataPtr(Tensor t)
    {
        var p = THSTensor_data(t.Handle);
        if (p == IntPtr.Zero) throw new InvalidOperationException("The tensor has no CPU data.");
        return (void*)p;
    }

    /// <summary>The product on raw pointers, parallel over blocks of output rows (each block reads its weights once).</summary>
    internal static void Run(float* x, ushort* w, ushort* b, float* y, int rows, int inF, int outF, int threads)
    {
        // Blocks of output rows: enough of them to balance threads, large enough to amortize scheduling.
        int blocks = Math.Min(outF, Math.Max(1, threads) * 8);
        int perBlock = (outF + blocks - 1) / blocks;
        blocks = (outF + perBlock - 1) / perBlock;
        nint xs = (nint)x, ws = (nint)w, bs = (nint)b, ys = (nint)y;
        void Block(int blk)
        {
            int o0 = blk * perBlock, o1 = Math.Min(outF, o0 + perBlock);
            Rows((float*)xs, (ushort*)ws, (ushort*)bs, (float*)ys, rows, inF, outF, o0, o1);
        }
        if (threads <= 1 || blocks == 1) for (int i = 0; i < blocks; i++) Block(i);
        else Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Block);
    }

    private static void Rows(float* x, ushort* w, ushort* b, float* y, int rows, int inF, int outF, int o0, int o1)
    {
        for (int o = o0; o < o1; o++)
        {
            ushort* wr = w + (long)o * inF;
            float bias = b is null ? 0f : Widen(b[o]);
            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                var (d0, d1, d2, d3) = Dot4(x + (long)r * inF, inF, wr, inF);
                y[(long)r * outF + o] = d0 + bias;
                y[(long)(r + 1) * outF + o] = d1 + bias;
                y[(long)(r + 2) * outF + o] = d2 + bias;
                y[(long)(r + 3) * outF + o] = d3 + bias;
            }
            for (; r < rows; r++) y[(long)r * outF + o] = Dot1(x + (long)r * inF, wr, inF) + bias;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Widen(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>8 bfloat16 → 8 float32: zero-extend to 32 bits, shift into the high half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen8(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    /// <summary>One row: x · w over n elements, two accumulators.</summary>
    private static float Dot1(float* x, ushort* w, int n)
    {
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        int k = 0;
        for (; k + 16 <= n; k += 16)
        {
            a0 = Fma.MultiplyAdd(Avx.LoadVector256(x + k), Widen8(w + k), a0);
            a1 = Fma.MultiplyAdd(Avx.LoadVector256(x + k + 8), Widen8(w + k + 8), a1);
        }
        for (; k + 8 <= n; k += 8) a0 = Fma.MultiplyAdd(Avx.LoadVector256(x + k), Widen8(w + k), a0);
        float s = Vector256.Sum(a0 + a1);
        for (; k < n; k++) s += x[k] * Widen(w[k]);
        return s;
    }

    /// <summary>Four rows (stride apart) against one weight row: each 8 widened weights are used four times.</summary>
    private static (float, float, float, float) Dot4(float* x, int stride, ushort* w, int n)
    {
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        float* x1 = x + stride, x2 = x1 + stride, x3 = x2 + stride;
        int k = 0;
        for (; k + 8 <= n; k += 8)
        {
            var wv = Widen8(w + k);
            a0 = Fma.MultiplyAdd(Avx.LoadVector256(x + k), wv, a0);
            a1 = Fma.MultiplyAdd(Avx.LoadVector256(x1 + k), wv, a1);
            a2 = Fma.MultiplyAdd(Avx.LoadVector256(x2 + k), wv, a2);
            a3 = Fma.MultiplyAdd(Avx.LoadVector256(x3 + k), wv, a3);
        }
        float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
        for (; k < n; k++)
        {
            float wk = Widen(w[k]);
            s0 += x[k] * wk; s1 += x1[k] * wk; s2 += x2[k] * wk; s3 += x3[k] * wk;
        }
        return (s0, s1, s2, s3);
    }
}
