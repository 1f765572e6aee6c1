using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model.Kernels;

/// <summary>The vector width a kernel runs with.</summary>
internal enum KernelIsa
{
    /// <summary>256-bit vectors (AVX2 + FMA).</summary>
    Vector256 = 256,

    /// <summary>512-bit vectors (AVX-512).</summary>
    Vector512 = 512,
}

/// <summary>
/// y = x Wᵀ (+ b) for a few rows of x (a decoding step: batch 1 to 8) and float32 or bfloat16 weights, on the CPU.
/// Decoding is bound by reading the weights, so the kernel reads each weight once per call for all rows together. One
/// row of x may read the weights as one sequential stream, row after row (<see cref="StreamDot{TV, TS, TW}"/>; the
/// decode policy times it against the tiles). The tiles walk the weight four output rows at a time (four concurrent
/// streams through memory, the next group prefetched into L2 meanwhile) and multiply each group of four weight rows
/// with every row of x, four x rows at a time where 32 registers allow (else two), while the group is still in the
/// L1/L2 cache. Products
/// and sums are float32 (bfloat16 weights are widened in registers, <see cref="ISimd{TV}.Widen"/>); x may be float32 or
/// bfloat16 (widened once), and y has x's dtype. Output rows are split over <c>threads</c> workers (docs/benchmarks.md,
/// "Decode kernels, prefill memory (issue 28)").
/// </summary>
internal static unsafe class FewRowsKernel
{
    /// <summary>The widest vector this CPU runs in hardware: Vector512 with AVX-512, else Vector256.</summary>
    public static KernelIsa BestIsa => Vector512.IsHardwareAccelerated ? KernelIsa.Vector512 : KernelIsa.Vector256;

    /// <summary>True where the kernel runs in hardware vectors (AVX-512, or AVX2 with FMA); elsewhere it runs emulated and
    /// the automatic policy never picks it.</summary>
    public static bool IsAccelerated => Vector512.IsHardwareAccelerated || (Avx2.IsSupported && Fma.IsSupported);

    /// <summary>x (rows, in) float32 or bfloat16; weight (out, in) float32 or bfloat16; bias (out) of the weight's dtype or
    /// null → (rows, out) in x's dtype, all CPU tensors, in the caller's dispose scope.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, KernelIsa isa, int threads, bool? fourRowTiles = null, bool streamOneRow = false)
    {
        CheckArguments(x, weight, bias);
        int rows = checked((int)x.shape[0]), inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        using var scope = NewDisposeScope();
        var xc = x.is_contiguous() ? x.alias() : x.contiguous();                                              // (rows, in)
        var wc = weight.is_contiguous() ? weight.alias() : weight.contiguous();                              // (out, in)
        var bf = bias?.to_type(ScalarType.Float32).contiguous();                                              // (out)
        var y = empty([rows, outF], x.dtype);                                                                 // (rows, out)
        bool wide = x.dtype == ScalarType.Float32;
        // bfloat16 x is widened here and the float32 sums rounded into y by the workers, each its own slice (Bf16Convert).
        float* xf = wide ? (float*)DataPtr(xc) : (float*)NativeMemory.Alloc((nuint)((long)rows * inF), sizeof(float));
        float* sums = wide ? (float*)DataPtr(y) : (float*)NativeMemory.Alloc((nuint)((long)rows * outF), sizeof(float));
        try
        {
            if (!wide) Bf16Convert.Widen((ushort*)DataPtr(xc), xf, (long)rows * inF);
            Run(isa, xf, rows, DataPtr(wc), weight.dtype == ScalarType.BFloat16, bf is null ? null : (float*)DataPtr(bf),
                sums, inF, outF, threads, fourRowTiles, wide ? null : (ushort*)DataPtr(y), streamOneRow);
        }
        finally
        {
            if (!wide)
            {
                NativeMemory.Free(xf);
                NativeMemory.Free(sums);
            }
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>Rounds columns o0..o1 of each of <paramref name="rows"/> rows of y (rows, out) float32 into
    /// <paramref name="rounded"/> (rows, out) bfloat16: a worker's own slice of a product.</summary>
    internal static void NarrowColumns(float* y, ushort* rounded, int rows, int outF, int o0, int o1)
    {
        for (int r = 0; r < rows; r++) Bf16Convert.Narrow(y + (long)r * outF + o0, rounded + (long)r * outF + o0, o1 - o0);
    }

    /// <summary>Shapes (x (rows, in), weight (out, in), bias (out)), float32 or bfloat16 dtypes and the CPU; throws <see cref="ArgumentException"/>.</summary>
    internal static void CheckArguments(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dim() != 2 || weight.dim() != 2 || x.shape[1] != weight.shape[1])
            throw new ArgumentException($"Expected x (rows, in) and weight (out, in), got ({string.Join(", ", x.shape)}) and ({string.Join(", ", weight.shape)}).");
        if (x.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || weight.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentException($"Expected float32 or bfloat16 x and weight, got {x.dtype} and {weight.dtype}.");
        if (bias is not null && (bias.dtype != weight.dtype || bias.dim() != 1 || bias.shape[0] != weight.shape[0]))
            throw new ArgumentException($"Expected a bias ({weight.shape[0]}) of the weight's dtype {weight.dtype}.");
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU || bias is { device_type: not DeviceType.CPU })
            throw new ArgumentException("The decode kernel runs on CPU tensors only.");
    }

    // The first element of a CPU tensor (libtorch's Tensor::data_ptr, exported by TorchSharp's native library).
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>The address of a CPU tensor's first element (HugePages marks from it; tests read it).</summary>
    internal static nint Address(Tensor t) => (nint)DataPtr(t);

    internal static void* DataPtr(Tensor t)
    {
        var p = THSTensor_data(t.Handle);
        if (p == IntPtr.Zero) throw new InvalidOperationException("The tensor has no CPU data.");
        return (void*)p;
    }

    /// <summary>The product on raw pointers: x (rows, in), w (out, in) float32 or bfloat16 bits, bias (out) or null, y (rows, out).
    /// <paramref name="fourRowTiles"/>: null follows the CPU (<see cref="FourRowTiles"/>), true or false forces the tiles (tests).
    /// Where <paramref name="rounded"/> is given, each worker also rounds its slice of y into it (rows, out) as bfloat16.
    /// <paramref name="streamOneRow"/>: one row of x streams the weights row after row (<see cref="StreamDot{TV, TS, TW}"/>)
    /// instead of going through the four-row tiles; the decode policy times both.</summary>
    internal static void Run(KernelIsa isa, float* x, int rows, void* w, bool bfloat16, float* bias, float* y, int inF, int outF, int threads,
                             bool? fourRowTiles = null, ushort* rounded = null, bool streamOneRow = false)
    {
        bool four = fourRowTiles ?? FourRowTiles(isa);
        int width = isa == KernelIsa.Vector512 ? Vec512.Count : Vec256.Count;
        // bfloat16 weights come widened as (even, odd) halves of each 2·width block: pack x the same way, once per call.
        float* xp = bfloat16 ? (float*)NativeMemory.Alloc((nuint)((long)rows * inF), sizeof(float)) : x;
        try
        {
            if (bfloat16) PackEvenOdd(x, xp, rows, inF, width);
            nint xs = (nint)xp, ws = (nint)w, bs = (nint)bias, ys = (nint)y, rs = (nint)rounded;
            ForEachRange(outF, threads, (o0, o1) =>
            {
                float* xq = (float*)xs, bq = (float*)bs, yq = (float*)ys;
                switch (isa, bfloat16)
                {
                    case (KernelIsa.Vector512, true): Range<Vector512<float>, Vec512, ushort>(xq, rows, (ushort*)ws, bq, yq, inF, outF, o0, o1, four, streamOneRow); break;
                    case (KernelIsa.Vector512, false): Range<Vector512<float>, Vec512, float>(xq, rows, (float*)ws, bq, yq, inF, outF, o0, o1, four, streamOneRow); break;
                    case (_, true): Range<Vector256<float>, Vec256, ushort>(xq, rows, (ushort*)ws, bq, yq, inF, outF, o0, o1, four, streamOneRow); break;
                    default: Range<Vector256<float>, Vec256, float>(xq, rows, (float*)ws, bq, yq, inF, outF, o0, o1, four, streamOneRow); break;
                }
                if (rs != 0) NarrowColumns(yq, (ushort*)rs, rows, outF, o0, o1);
            });
        }
        finally
        {
            if (bfloat16) NativeMemory.Free(xp);
        }
    }

    /// <summary>
    /// Splits the output rows 0..<paramref name="outF"/> into contiguous ranges of whole groups of four, two per worker
    /// (each range streams its own weights), and runs <paramref name="range"/>(first, end) on each: on the calling thread
    /// alone for one worker, else with <c>Parallel.For</c> at a fixed degree (the calling thread included).
    /// </summary>
    internal static void ForEachRange(int outF, int threads, Action<int, int> range)
    {
        int chunks = Math.Min(Math.Max(1, outF / 4), Math.Max(1, threads) * 2);
        int perChunk = ((outF + chunks - 1) / chunks + 3) / 4 * 4;
        chunks = (outF + perChunk - 1) / perChunk;
        void Chunk(int c) => range(c * perChunk, Math.Min(outF, (c + 1) * perChunk));
        if (threads <= 1 || chunks == 1) for (int c = 0; c < chunks; c++) Chunk(c);
        else Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Chunk);
    }

    /// <summary><see cref="PackEvenOdd(float*, float*, int, int, int)"/> on spans (tests).</summary>
    internal static void PackEvenOdd(ReadOnlySpan<float> x, Span<float> xp, int rows, int inF, int width)
    {
        if (x.Length < (long)rows * inF || xp.Length < (long)rows * inF) throw new ArgumentException("Expected rows·in values in x and in the packed copy.");
        fixed (float* px = x, pp = xp) PackEvenOdd(px, pp, rows, inF, width);
    }

    /// <summary>Each block of 2·width values of each row of x becomes its even-indexed values, then its odd-indexed ones
    /// (the order <see cref="ISimd{TV}.Widen"/> yields the weights in); the tail past the last whole block is copied as is.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    internal static void PackEvenOdd(float* x, float* xp, int rows, int inF, int width)
    {
        int main = inF / (2 * width) * (2 * width);
        for (int r = 0; r < rows; r++)
        {
            float* src = x + (long)r * inF, dst = xp + (long)r * inF;
            for (int k0 = 0; k0 < main; k0 += 2 * width)
                for (int i = 0; i < width; i++)
                {
                    dst[k0 + i] = src[k0 + 2 * i];
                    dst[k0 + width + i] = src[k0 + 2 * i + 1];
                }
            for (int k = main; k < inF; k++) dst[k] = src[k];
        }
    }

    /// <summary>Output rows o0..o1 for every row of x: four weight rows at a time, against four x rows at a time where
    /// <paramref name="four"/>, then two, then one; a single row of x as one stream instead where <paramref name="stream"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static void Range<TV, TS, TW>(float* xp, int rows, TW* w, float* bias, float* y, int inF, int outF, int o0, int o1, bool four, bool stream)
        where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        if (rows == 1 && stream)
        {
            // One row of x: the weights are read as one sequential stream, row after row (StreamDot).
            for (int j = o0; j < o1; j++) y[j] = StreamDot<TV, TS, TW>(xp, w + (long)j * inF, inF);
            if (bias is not null)
                for (int j = o0; j < o1; j++) y[j] += bias[j];
            return;
        }
        // Each group of four weight rows goes through `passes` tiles (one per four, two or one rows of x); each tile asks
        // for its share of the next group, so that the next group streams in evenly over the whole of this group's time.
        int fours = four ? rows / 4 : 0, passes = Passes(rows, four);
        long share = 4L * inF * sizeof(TW) / passes;
        int o = o0;
        for (; o + 4 <= o1; o += 4)
        {
            TW* wo = w + (long)o * inF;
            byte* next = Sse.IsSupported && o + 8 <= o1 ? (byte*)(wo + 4L * inF) : null;
            int r = 0, pass = 0;
            for (; r + 4 <= 4 * fours; r += 4, pass++)
                Tile4x4<TV, TS, TW>(xp + (long)r * inF, inF, wo, y + (long)r * outF + o, outF, new(next, pass * share, passes));
            for (; r + 2 <= rows; r += 2, pass++)
                Tile2x4<TV, TS, TW>(xp + (long)r * inF, inF, wo, y + (long)r * outF + o, outF, new(next, pass * share, passes));
            if (r < rows) Tile1x4<TV, TS, TW>(xp + (long)r * inF, inF, wo, y + (long)r * outF + o, new(next, pass * share, passes));
        }
        for (; o < o1; o++)
            for (int r = 0; r < rows; r++) y[(long)r * outF + o] = Dot<TV, TS, TW>(xp + (long)r * inF, w + (long)o * inF, inF);
        if (bias is not null)
            for (int r = 0; r < rows; r++)
                for (int j = o0; j < o1; j++) y[(long)r * outF + j] += bias[j];
    }

    /// <summary>
    /// Where a tile asks for the next group of four weight rows (contiguous after its own) into the L2 cache while it
    /// multiplies: the next group then streams in while this one is multiplied. The hardware prefetchers alone stop at
    /// each 4 KiB page, which is one bfloat16 row of 2048: measured on the 1.4B shapes, batch 1 read 63–67 % of the
    /// bandwidth without it and 84–93 % with it (bfloat16), 76 → 81–88 % (float32); into L1 instead, 64–85 %; a fixed
    /// distance ahead in each row instead (0.5–2 KiB), 63–75 % at 1 thread (docs/benchmarks.md, "Prefetching the next
    /// rows"). A group goes through one tile per four (or two, or one) rows of x: tile <c>pass</c> of <c>Passes</c> asks
    /// for its 1/Passes share of the next group (starting <c>Offset</c> bytes in), spread evenly over its steps — all of
    /// it in the first tile left the memory idle through the others (batch 8, docs/benchmarks.md, "Issue 28, fourth round").
    /// </summary>
    private readonly struct NextGroup(byte* start, long offset, int passes)
    {
        /// <summary>The next group's first byte, or null (no next group, or no prefetch instruction).</summary>
        public readonly byte* Start = start;
        public readonly long Offset = offset;
        public readonly int Passes = passes;
    }

    /// <summary>Asks, at step k of a tile (2·Count weights of each of four rows), for the matching 1/Passes of the tile's
    /// share of the next group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch<TV, TS, TW>(in NextGroup next, int k) where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        var (from, to) = ShareAt(next.Offset, next.Passes, k, 2 * TS.Count, sizeof(TW));
        for (long line = from & ~63L; line < to; line += 64) Sse.Prefetch1(next.Start + line);
    }

    /// <summary>The bytes of the next group (from its start) that a tile asks for at step k of <paramref name="stepWeights"/>
    /// weights per row: its share starts <paramref name="offset"/> bytes in, and 1/passes of the four rows' step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (long From, long To) ShareAt(long offset, int passes, int k, int stepWeights, int weightBytes)
        => (offset + 4L * k * weightBytes / passes, offset + 4L * (k + stepWeights) * weightBytes / passes);

    /// <summary>The tiles a group of four weight rows goes through for <paramref name="rows"/> rows of x: one per four rows
    /// with four-row tiles, then one per pair, then one for a last single row.</summary>
    internal static int Passes(int rows, bool four)
    {
        int fours = four ? rows / 4 : 0, twos = (rows - 4 * fours) / 2;
        return fours + twos + (rows - 4 * fours - 2 * twos);
    }

    /// <summary>2·Count weights from p as two vectors, in the order x was packed in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (TV A, TV B) Pair<TV, TS, TW>(TW* p) where TV : struct where TS : ISimd<TV> where TW : unmanaged
        => typeof(TW) == typeof(float) ? (TS.Load((float*)p), TS.Load((float*)p + TS.Count)) : TS.Widen((ushort*)p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Scalar<TW>(TW* p) where TW : unmanaged
        => typeof(TW) == typeof(float) ? *(float*)p : Bf16Convert.Widen(*(ushort*)p);

    /// <summary>One x row against four consecutive weight rows (n apart): y[0..3].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static void Tile1x4<TV, TS, TW>(float* x, int n, TW* w, float* y, NextGroup next)
        where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        TW* w1 = w + n, w2 = w1 + n, w3 = w2 + n;
        int step = 2 * TS.Count, k = 0;
        for (; k + step <= n; k += step)
        {
            if (next.Start != null) Prefetch<TV, TS, TW>(next, k);
            TV xa = TS.Load(x + k), xb = TS.Load(x + k + TS.Count);
            var (p, q) = Pair<TV, TS, TW>(w + k);
            a0 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a0));
            (p, q) = Pair<TV, TS, TW>(w1 + k);
            a1 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a1));
            (p, q) = Pair<TV, TS, TW>(w2 + k);
            a2 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a2));
            (p, q) = Pair<TV, TS, TW>(w3 + k);
            a3 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a3));
        }
        float s0 = TS.Sum(a0), s1 = TS.Sum(a1), s2 = TS.Sum(a2), s3 = TS.Sum(a3);
        for (; k < n; k++)
        {
            float xk = x[k];
            s0 += xk * Scalar(w + k); s1 += xk * Scalar(w1 + k); s2 += xk * Scalar(w2 + k); s3 += xk * Scalar(w3 + k);
        }
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3;
    }

    /// <summary>Two x rows (n apart) against four consecutive weight rows: y[0..3] and y[ys..ys+3]. Each widened weight
    /// vector is used twice; eight accumulators, so the 16 registers of AVX2 suffice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static void Tile2x4<TV, TS, TW>(float* x, int n, TW* w, float* y, int ys, NextGroup next)
        where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero, b0 = TS.Zero, b1 = TS.Zero, b2 = TS.Zero, b3 = TS.Zero;
        float* x1 = x + n;
        TW* w1 = w + n, w2 = w1 + n, w3 = w2 + n;
        int step = 2 * TS.Count, k = 0;
        for (; k + step <= n; k += step)
        {
            if (next.Start != null) Prefetch<TV, TS, TW>(next, k);
            TV xa = TS.Load(x + k), xb = TS.Load(x + k + TS.Count), za = TS.Load(x1 + k), zb = TS.Load(x1 + k + TS.Count);
            var (p, q) = Pair<TV, TS, TW>(w + k);
            a0 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a0));
            b0 = TS.MulAdd(zb, q, TS.MulAdd(za, p, b0));
            (p, q) = Pair<TV, TS, TW>(w1 + k);
            a1 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a1));
            b1 = TS.MulAdd(zb, q, TS.MulAdd(za, p, b1));
            (p, q) = Pair<TV, TS, TW>(w2 + k);
            a2 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a2));
            b2 = TS.MulAdd(zb, q, TS.MulAdd(za, p, b2));
            (p, q) = Pair<TV, TS, TW>(w3 + k);
            a3 = TS.MulAdd(xb, q, TS.MulAdd(xa, p, a3));
            b3 = TS.MulAdd(zb, q, TS.MulAdd(za, p, b3));
        }
        float s0 = TS.Sum(a0), s1 = TS.Sum(a1), s2 = TS.Sum(a2), s3 = TS.Sum(a3);
        float t0 = TS.Sum(b0), t1 = TS.Sum(b1), t2 = TS.Sum(b2), t3 = TS.Sum(b3);
        for (; k < n; k++)
        {
            float xk = x[k], zk = x1[k], v0 = Scalar(w + k), v1 = Scalar(w1 + k), v2 = Scalar(w2 + k), v3 = Scalar(w3 + k);
            s0 += xk * v0; s1 += xk * v1; s2 += xk * v2; s3 += xk * v3;
            t0 += zk * v0; t1 += zk * v1; t2 += zk * v2; t3 += zk * v3;
        }
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3;
        y[ys] = t0; y[ys + 1] = t1; y[ys + 2] = t2; y[ys + 3] = t3;
    }

    /// <summary>Tiles of four x rows where 32 vector registers hold their 16 accumulators and 8 weight vectors: with
    /// AVX-512 (for 256-bit vectors too: EVEX encodes 32 of them) and on the 512-bit path wherever it runs. AVX2 has 16.</summary>
    internal static bool FourRowTiles(KernelIsa isa) => isa == KernelIsa.Vector512 || Vector512.IsHardwareAccelerated;

    /// <summary>Four x rows (n apart) against four consecutive weight rows: 16 accumulators, each widened weight vector used
    /// four times and each x vector four times, so a step does 8 loads of x and 4 of the weight (8 for float32 weights)
    /// for 32 multiply-adds (the two-row tile: 4 and 4 (8) for 16). Needs 32 registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static void Tile4x4<TV, TS, TW>(float* x, int n, TW* w, float* y, int ys, NextGroup next)
        where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero, b0 = TS.Zero, b1 = TS.Zero, b2 = TS.Zero, b3 = TS.Zero;
        TV c0 = TS.Zero, c1 = TS.Zero, c2 = TS.Zero, c3 = TS.Zero, d0 = TS.Zero, d1 = TS.Zero, d2 = TS.Zero, d3 = TS.Zero;
        float* x1 = x + n, x2 = x1 + n, x3 = x2 + n;
        TW* w1 = w + n, w2 = w1 + n, w3 = w2 + n;
        int step = 2 * TS.Count, k = 0;
        for (; k + step <= n; k += step)
        {
            if (next.Start != null) Prefetch<TV, TS, TW>(next, k);
            var (p0, q0) = Pair<TV, TS, TW>(w + k);
            var (p1, q1) = Pair<TV, TS, TW>(w1 + k);
            var (p2, q2) = Pair<TV, TS, TW>(w2 + k);
            var (p3, q3) = Pair<TV, TS, TW>(w3 + k);
            TV xa = TS.Load(x + k), xb = TS.Load(x + k + TS.Count);
            a0 = TS.MulAdd(xb, q0, TS.MulAdd(xa, p0, a0)); a1 = TS.MulAdd(xb, q1, TS.MulAdd(xa, p1, a1));
            a2 = TS.MulAdd(xb, q2, TS.MulAdd(xa, p2, a2)); a3 = TS.MulAdd(xb, q3, TS.MulAdd(xa, p3, a3));
            xa = TS.Load(x1 + k); xb = TS.Load(x1 + k + TS.Count);
            b0 = TS.MulAdd(xb, q0, TS.MulAdd(xa, p0, b0)); b1 = TS.MulAdd(xb, q1, TS.MulAdd(xa, p1, b1));
            b2 = TS.MulAdd(xb, q2, TS.MulAdd(xa, p2, b2)); b3 = TS.MulAdd(xb, q3, TS.MulAdd(xa, p3, b3));
            xa = TS.Load(x2 + k); xb = TS.Load(x2 + k + TS.Count);
            c0 = TS.MulAdd(xb, q0, TS.MulAdd(xa, p0, c0)); c1 = TS.MulAdd(xb, q1, TS.MulAdd(xa, p1, c1));
            c2 = TS.MulAdd(xb, q2, TS.MulAdd(xa, p2, c2)); c3 = TS.MulAdd(xb, q3, TS.MulAdd(xa, p3, c3));
            xa = TS.Load(x3 + k); xb = TS.Load(x3 + k + TS.Count);
            d0 = TS.MulAdd(xb, q0, TS.MulAdd(xa, p0, d0)); d1 = TS.MulAdd(xb, q1, TS.MulAdd(xa, p1, d1));
            d2 = TS.MulAdd(xb, q2, TS.MulAdd(xa, p2, d2)); d3 = TS.MulAdd(xb, q3, TS.MulAdd(xa, p3, d3));
        }
        Span<float> s = stackalloc float[16];
        s[0] = TS.Sum(a0); s[1] = TS.Sum(a1); s[2] = TS.Sum(a2); s[3] = TS.Sum(a3);
        s[4] = TS.Sum(b0); s[5] = TS.Sum(b1); s[6] = TS.Sum(b2); s[7] = TS.Sum(b3);
        s[8] = TS.Sum(c0); s[9] = TS.Sum(c1); s[10] = TS.Sum(c2); s[11] = TS.Sum(c3);
        s[12] = TS.Sum(d0); s[13] = TS.Sum(d1); s[14] = TS.Sum(d2); s[15] = TS.Sum(d3);
        for (; k < n; k++)
        {
            float v0 = Scalar(w + k), v1 = Scalar(w1 + k), v2 = Scalar(w2 + k), v3 = Scalar(w3 + k);
            for (int i = 0; i < 4; i++)
            {
                float xk = x[(long)i * n + k];
                s[4 * i] += xk * v0; s[4 * i + 1] += xk * v1; s[4 * i + 2] += xk * v2; s[4 * i + 3] += xk * v3;
            }
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) y[(long)i * ys + j] = s[4 * i + j];
    }

    /// <summary>How far ahead of its reads <see cref="StreamDot{TV, TS, TW}"/> asks for the weights into L2, in weights
    /// (4 KiB of float32, 2 KiB of bfloat16: measured at 1 thread, 2 and 8 KiB read slower for float32, 4 and 8 KiB for
    /// bfloat16).</summary>
    internal const int StreamPrefetchWeights = 1024;

    /// <summary>
    /// One x row against one weight row, for a single row of x: called on consecutive weight rows, the weights are read as
    /// one sequential stream, which a core reads fastest — measured on 2 GiB of float32 weights at 1 thread (in=2048),
    /// this stream read 26–27 GB/s against 24.5 for four rows at a time with the next group prefetched, and with the
    /// weights on 2 MiB pages 33 against 28 GB/s, the machine's full single-core rate (docs/benchmarks.md, "Issue 28,
    /// fourth round"). It is not always faster: in the fifth round the four-row tiles read as fast or faster at 512 bits
    /// (the 5,632-wide down projection 22–23 against 14–17 GB/s) and much faster at 256 bits (bfloat16 25–28 against
    /// 14–17 GB/s), so the decode policy times both. Four accumulators keep four multiply-add chains in flight; each step asks for the weights
    /// <see cref="StreamPrefetchWeights"/> ahead (a prefetch never faults, so past the end of the weights is harmless).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static float StreamDot<TV, TS, TW>(float* x, TW* w, int n) where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        int step = 4 * TS.Count, k = 0;
        bool prefetch = Sse.IsSupported;
        for (; k + step <= n; k += step)
        {
            if (prefetch) PrefetchLines((byte*)(w + k + StreamPrefetchWeights), step * sizeof(TW));
            var (p0, q0) = Pair<TV, TS, TW>(w + k);
            var (p1, q1) = Pair<TV, TS, TW>(w + k + 2 * TS.Count);
            a0 = TS.MulAdd(TS.Load(x + k), p0, a0);
            a1 = TS.MulAdd(TS.Load(x + k + TS.Count), q0, a1);
            a2 = TS.MulAdd(TS.Load(x + k + 2 * TS.Count), p1, a2);
            a3 = TS.MulAdd(TS.Load(x + k + 3 * TS.Count), q1, a3);
        }
        for (; k + 2 * TS.Count <= n; k += 2 * TS.Count)
        {
            var (p, q) = Pair<TV, TS, TW>(w + k);
            a0 = TS.MulAdd(TS.Load(x + k), p, a0);
            a1 = TS.MulAdd(TS.Load(x + k + TS.Count), q, a1);
        }
        float s = TS.Sum(TS.Add(TS.Add(a0, a1), TS.Add(a2, a3)));
        for (; k < n; k++) s += x[k] * Scalar(w + k);
        return s;
    }

    /// <summary>Asks for the 64-byte lines p .. p + bytes into L2, up to four of them, unrolled: bytes is a constant of
    /// each compiled copy, so the tests fold away (a loop of prefetches measured 10–20 % slower).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchLines(byte* p, int bytes)
    {
        Sse.Prefetch1(p);
        if (bytes > 64) Sse.Prefetch1(p + 64);
        if (bytes > 128) Sse.Prefetch1(p + 128);
        if (bytes > 192) Sse.Prefetch1(p + 192);
    }

    /// <summary>One x row against one weight row (the output rows left after the groups of four).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call: tier-0 vector code is many times slower
    private static float Dot<TV, TS, TW>(float* x, TW* w, int n) where TV : struct where TS : ISimd<TV> where TW : unmanaged
    {
        TV a = TS.Zero;
        int step = 2 * TS.Count, k = 0;
        for (; k + step <= n; k += step)
        {
            var (p, q) = Pair<TV, TS, TW>(w + k);
            a = TS.MulAdd(TS.Load(x + k + TS.Count), q, TS.MulAdd(TS.Load(x + k), p, a));
        }
        float s = TS.Sum(a);
        for (; k < n; k++) s += x[k] * Scalar(w + k);
        return s;
    }
}
