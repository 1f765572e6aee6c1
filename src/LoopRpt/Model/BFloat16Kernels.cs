using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

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
        CheckArguments(x, weight, bias);
        int rows = checked((int)x.shape[0]), inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        var xc = x.is_contiguous() ? x : x.contiguous();
        var wc = weight.is_contiguous() ? weight : weight.contiguous();
        var bc = bias is null || bias.is_contiguous() ? bias : bias.contiguous();
        try
        {
            var y = empty([rows, outF], ScalarType.Float32);   // (rows, out), in the caller's dispose scope
            Run((float*)DataPtr(xc), (ushort*)DataPtr(wc), bc is null ? null : (ushort*)DataPtr(bc), (float*)DataPtr(y),
                rows, inF, outF, KernelThreads());
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

    /// <summary>Throws unless the kernel can run and x (rows, in) float32, weight (out, in) and bias (out) bfloat16 are CPU tensors.</summary>
    private static void CheckArguments(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("The bfloat16 kernel needs AVX2 and FMA.");
        if (x.dim() != 2 || weight.dim() != 2 || x.shape[1] != weight.shape[1])
            throw new ArgumentException($"Expected x (rows, in) and weight (out, in), got ({string.Join(", ", x.shape)}) and ({string.Join(", ", weight.shape)}).");
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.BFloat16 || (bias is not null && bias.dtype != ScalarType.BFloat16))
            throw new ArgumentException("Expected float32 x and bfloat16 weight and bias.");
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU)
            throw new ArgumentException("The bfloat16 kernel runs on CPU tensors only.");
    }

    /// <summary>Weights widened per block of <see cref="LinearBlocked"/>: about 8 MB of float32 (about the last-level cache).</summary>
    internal const int WidenBlockElements = 1 << 21;

    /// <summary>Output rows of a block are a multiple of this (and at least this): narrow products run far below the
    /// float32 product's rate.</summary>
    internal const int BlockRowMultiple = 64;

    /// <summary>
    /// The same product for many rows (prefill, scoring): the weight is widened to float32 one block of output rows at a
    /// time into a buffer that stays in cache, and each block goes through libtorch's float32 matrix product. Costs a few
    /// percent over a float32 weight instead of writing and re-reading a float32 copy of the whole matrix.
    /// </summary>
    public static Tensor LinearBlocked(Tensor x, Tensor weight, Tensor? bias, int blockElements = WidenBlockElements)
    {
        CheckArguments(x, weight, bias);
        long rows = x.shape[0];
        int inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        int block = Math.Max(1, blockElements / Math.Max(1, inF));
        if (block >= BlockRowMultiple / 2) block = Math.Max(BlockRowMultiple, (block + BlockRowMultiple - 1) / BlockRowMultiple * BlockRowMultiple);
        block = Math.Min(block, outF);
        var wc = weight.is_contiguous() ? weight : weight.contiguous();
        using var scope = NewDisposeScope();
        try
        {
            var y = empty([rows, outF], ScalarType.Float32);                       // (rows, out)
            using var buffer = Buffer((long)block * inF).narrow(0, 0, (long)block * inF).view(block, inF);   // (block, in)
            for (int o0 = 0; o0 < outF; o0 += block)
            {
                int n = Math.Min(block, outF - o0);
                using var wb = buffer.narrow(0, 0, n);                              // (n, in) float32
                using (var source = wc.narrow(0, o0, n)) wb.copy_(source);          // widened by libtorch, on its own threads
                using var yb = F.linear(x, wb);                                     // (rows, n)
                using var target = y.narrow(1, o0, n);
                target.copy_(yb);
            }
            if (bias is not null) y.PlusInPlace(bias.to_type(ScalarType.Float32));
            return y.MoveToOuterDisposeScope();
        }
        finally
        {
            if (!ReferenceEquals(wc, weight)) wc.Dispose();
        }
    }

    // One widening buffer per thread, kept between calls: a fresh 8 MB allocation per product costs page faults
    // (hundreds of products per prefill). Outside every dispose scope; it lives as long as its thread.
    [ThreadStatic] private static Tensor? _buffer;

    private static Tensor Buffer(long elements)
    {
        if (_buffer is null || _buffer.numel() < elements)
        {
            _buffer?.Dispose();
            _buffer = empty(elements, ScalarType.Float32).DetachFromDisposeScope();
        }
        return _buffer;
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

    /// <summary>
    /// Threads of the decode kernel: half of libtorch's (at least 1). libtorch's OpenMP workers keep spinning for a while
    /// after each operation, and decoding alternates the kernel with small libtorch operations, so a kernel on every
    /// core competes with them: on 2 cores, one kernel thread decoded the 1.4B shape at 0.96 tokens/s, two at 0.82
    /// (docs/benchmarks.md).
    /// </summary>
    internal static int KernelThreads() => Math.Max(1, get_num_threads() / 2);

    /// <summary>The product on raw pointers, parallel over blocks of output rows (each block reads its weights once).</summary>
    internal static void Run(float* x, ushort* w, ushort* b, float* y, int rows, int inF, int outF, int threads)
    {
        // Blocks of output rows: enough of them to balance threads, large enough to amortize scheduling.
        int blocks = Math.Min(outF, Math.Max(1, threads) * 8);
        int perBlock = (outF + blocks - 1) / blocks;
        perBlock = (perBlock + 3) / 4 * 4;                  // whole groups of four weight rows (Dot1x4)
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
        // Groups of four input rows share each widened weight vector (Dot4). Rows left over take four weight rows at a
        // time (Dot1x4): four concurrent streams through memory instead of one, which keeps a single row (decode) at the
        // memory's pace (a 2048-wide bfloat16 row is one 4 KB page, where a hardware prefetcher starts over).
        int grouped = rows / 4 * 4;
        for (int o = o0; o < o1; o++)
        {
            ushort* wr = w + (long)o * inF;
            float bias = b is null ? 0f : Widen(b[o]);
            for (int r = 0; r < grouped; r += 4)
            {
                var (d0, d1, d2, d3) = Dot4(x + (long)r * inF, inF, wr, inF);
                y[(long)r * outF + o] = d0 + bias;
                y[(long)(r + 1) * outF + o] = d1 + bias;
                y[(long)(r + 2) * outF + o] = d2 + bias;
                y[(long)(r + 3) * outF + o] = d3 + bias;
            }
        }
        for (int r = grouped; r < rows; r++)
        {
            float* xr = x + (long)r * inF;
            float* yr = y + (long)r * outF;
            int o = o0;
            for (; o + 4 <= o1; o += 4)
            {
                var (d0, d1, d2, d3) = Dot1x4(xr, w + (long)o * inF, inF);
                yr[o] = d0 + (b is null ? 0f : Widen(b[o]));
                yr[o + 1] = d1 + (b is null ? 0f : Widen(b[o + 1]));
                yr[o + 2] = d2 + (b is null ? 0f : Widen(b[o + 2]));
                yr[o + 3] = d3 + (b is null ? 0f : Widen(b[o + 3]));
            }
            for (; o < o1; o++) yr[o] = Dot1(xr, w + (long)o * inF, inF) + (b is null ? 0f : Widen(b[o]));
        }
    }

    /// <summary>One input row against four consecutive weight rows (n apart).</summary>
    private static (float, float, float, float) Dot1x4(float* x, ushort* w, int n)
    {
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        ushort* w1 = w + n, w2 = w1 + n, w3 = w2 + n;
        int k = 0;
        for (; k + 8 <= n; k += 8)
        {
            var xv = Avx.LoadVector256(x + k);
            a0 = Fma.MultiplyAdd(xv, Widen8(w + k), a0);
            a1 = Fma.MultiplyAdd(xv, Widen8(w1 + k), a1);
            a2 = Fma.MultiplyAdd(xv, Widen8(w2 + k), a2);
            a3 = Fma.MultiplyAdd(xv, Widen8(w3 + k), a3);
        }
        float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
        for (; k < n; k++)
        {
            float xk = x[k];
            s0 += xk * Widen(w[k]); s1 += xk * Widen(w1[k]); s2 += xk * Widen(w2[k]); s3 += xk * Widen(w3[k]);
        }
        return (s0, s1, s2, s3);
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
